# cython: language_level=3
# Types for the compiled build of relay/core/audio.py (pure-Python mode, as relay/core/retention.pxd):
# the client's append lane reads the stream check's and the account's state as C fields.

cdef class InputAudioCheck:
    cdef public str encoding
    cdef public bytes _carry
    cdef public object on_split_sample

    cpdef take_streamed(self, bytes audio)


cdef class AudioAccount:
    cdef public str encoding
    cdef public Py_ssize_t bytes
