# cython: language_level=3
# Types for the compiled build of relay/core/retention.py (Cython's pure-Python mode: the .py is
# the one source; this file only types it). Compiled, its fields are C fields the client's append
# lane (relay/io/_frame_path.pyx) reads and writes without a lookup, and ``append`` and ``_trim``
# run as C. Every field stays public: the Python build and the tests see the same object.

cdef class AudioRetention:
    cdef public object _chunks
    cdef public Py_ssize_t _start
    cdef public Py_ssize_t end
    cdef public Py_ssize_t origin
    cdef public object pinned_from
    cdef public object _speech_from
    cdef public object _speech_end
    cdef public str encoding
    cdef public Py_ssize_t _per_ms
    cdef public bint vad
    cdef public Py_ssize_t prefix_ms
    cdef public object _marks
    cdef public double _next_mark
    cdef public Py_ssize_t _trim_at
    cdef public object _sent_at

    cpdef append(self, bytes audio, object now=*)
    cpdef _trim(self, object now=*)
    cpdef _release_before(self, Py_ssize_t position)
    cpdef Py_ssize_t keep_from(self) except? -1
