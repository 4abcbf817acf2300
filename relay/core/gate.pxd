# cython: language_level=3
# Types for the compiled build of relay/core/gate.py (pure-Python mode, as relay/core/retention.pxd):
# the client's append lane reads the gate's state as C fields.

cdef class ReadinessGate:
    cdef public Py_ssize_t max_events
    cdef public Py_ssize_t max_bytes
    cdef public double timeout_s
    cdef public bint session_ready
    cdef public Py_ssize_t pending_updates
    cdef public object _held
    cdef public Py_ssize_t held_bytes
