# cython: language_level=3
# Types for the compiled build of relay/core/resume.py (pure-Python mode, as relay/core/retention.pxd):
# the audio delta's lane keeps the resume log with a C call on C fields.

cdef class SentLog:
    cdef public Py_ssize_t window_bytes
    cdef public Py_ssize_t window_frames
    cdef public Py_ssize_t max_bytes
    cdef public Py_ssize_t max_frames
    cdef public object _frames
    cdef public Py_ssize_t bytes
    cdef public bint detached

    cpdef append(self, object frame)
