"""What other compiled modules call in ``relay/core/_speedups.pyx`` without a Python call."""

cdef bytes c_encode_frame(object payload, int opcode, bint mask)
cdef bint c_looks_like_float32(object pcm) except -1
cdef object c_decode_plain_append(object data)
