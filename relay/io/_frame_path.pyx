# cython: language_level=3, boundscheck=False, wraparound=False
"""``relay.io.frame_path`` and ``relay.io.lanes``, compiled: the same steps, without the interpreter.

Those modules are the reference (their docstrings say what this does and why); this one gains
what the interpreter costs per frame: the loop over a read's messages, the checks and the lanes'
steps run as C, and a frame is encoded and sent without a Python call. Where a lane's reference
calls a method of the conversation's parts for its commonest case, the compiled lane takes that
method's steps itself (named at each); the rest of the suite runs on both builds in CI.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memchr, memcmp
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from relay.core._speedups cimport c_decode_plain_append, c_encode_frame, c_looks_like_float32
from relay.core.audio cimport AudioAccount, InputAudioCheck
from relay.core.gate cimport ReadinessGate
from relay.core.resume cimport SentLog
from relay.core.retention cimport AudioRetention

from relay.core.protocol import STREAM_EVENT_TYPES
from relay.core.websocket import FrameReader, ProtocolError, encode_frame_parts

from orjson import loads as _json_loads

cdef enum:
    OP_TEXT = 0x1
    OP_CLOSE = 0x8
    OP_PING = 0x9
    LARGE_FRAME = 65_536  # relay.core.websocket.LARGE_FRAME
    MAX_EARLY_MESSAGES = 16  # relay.io.frame_path's
    MAX_EARLY_BYTES = 1024 * 1024

EARLY = "early"

cdef list _gathering = None


def begin_batch():
    """``relay.io.frame_path.py_begin_batch``."""
    global _gathering
    if _gathering is not None:
        return None
    _gathering = []
    return _gathering


def end_batch(gathered):
    """``relay.io.frame_path.py_end_batch``."""
    global _gathering
    if gathered is None:
        return
    _gathering = None
    for conn in gathered:
        (<FramePath>conn).flush()


cdef class FramePath:
    """``relay.io.frame_path.PyFramePath``."""

    cdef public bint client_side
    cdef public object reader
    cdef public object transport
    cdef public bint closing
    cdef public bint handshaking
    cdef public bint seen
    cdef public object lane
    cdef public object on_failure
    cdef public object _handler
    cdef public list _early
    cdef public Py_ssize_t _early_bytes
    cdef public list _gathered

    def __init__(self, bint client_side, Py_ssize_t max_size):
        self.client_side = client_side
        self.reader = FrameReader(masked=not client_side, max_size=max_size)
        self.transport = None
        self.closing = False
        self.handshaking = False
        self.seen = False
        self.lane = None
        self.on_failure = None
        self._handler = None
        self._early = []
        self._early_bytes = 0
        self._gathered = []

    # ------------------------------------------------------------------ sending
    def send(self, data, int opcode=OP_TEXT):
        return self.c_send(data, opcode)

    cdef bint c_send(self, object data, int opcode) except -1:
        cdef object transport = self.transport
        cdef bytes frame
        if transport is None or self.closing:
            return False
        if len(data) < LARGE_FRAME:
            frame = c_encode_frame(data, opcode, self.client_side)
            if _gathering is None:
                transport.write(frame)
            else:
                if not self._gathered:
                    _gathering.append(self)
                self._gathered.append(frame)
        else:
            header, body = encode_frame_parts(data, opcode, mask=self.client_side)
            self._write(header)
            transport.write(body)
        return True

    def _write(self, data):
        if self._gathered:
            self.flush()
        self.transport.write(data)

    def flush(self):
        cdef list gathered = self._gathered
        self._gathered = []
        if gathered and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(gathered)

    # ------------------------------------------------------------------ receiving
    cdef inline bint _offer(self, bytes payload) except -1:
        """The lane's answer: a compiled lane's without a Python call."""
        lane = self.lane
        if lane is None:
            return False
        if isinstance(lane, Lane):
            return (<Lane>lane).c_take(payload)
        return lane.take(payload)

    def data_received(self, data):
        cdef object this = self  # the subclass's rare paths
        cdef object failure = None
        cdef list messages
        cdef object gathered = None
        cdef bint closed = False
        cdef tuple message
        cdef int opcode
        cdef bytes payload
        self.seen = True
        try:
            if self.handshaking:
                data = this._through_handshake(data)
                if not data:
                    return
            try:
                messages = self.reader.feed(data)
            except ProtocolError as exc:
                messages, failure = exc.messages, exc
            if PyList_GET_SIZE(messages) > 1:
                gathered = begin_batch()
            try:
                for message in messages:
                    opcode = message[0]
                    payload = message[1]
                    if opcode < OP_CLOSE:
                        if self.closing:
                            continue
                        if self._handler is None:
                            self._early.append(message)
                            self._early_bytes += PyBytes_GET_SIZE(payload)
                            if PyList_GET_SIZE(self._early) >= MAX_EARLY_MESSAGES or self._early_bytes >= MAX_EARLY_BYTES:
                                this.pause_reading(EARLY)
                        elif opcode != OP_TEXT or not self._offer(payload):
                            self._handler(opcode, payload)
                    elif opcode == OP_CLOSE:
                        this._close_received(payload)
                        closed = True
                        break
                    elif opcode == OP_PING:
                        this._pong(payload)
            finally:
                if gathered is not None:
                    end_batch(gathered)
            if failure is not None and not closed:
                this._fail(failure)
        except ProtocolError as exc:
            this._protocol_error(exc)
        except Exception as exc:
            if self.on_failure is None:
                this.abort()
            else:
                self.on_failure(exc)


# ---------------------------------------------------------------------------------- lanes
cdef str APPEND = "input_audio_buffer.append"
cdef str AUDIO_DELTA = "response.output_audio.delta"
cdef bytes AUDIO_DELTA_PREFIX = b'{"type":"response.output_audio.delta"'
cdef bytes DELTA_KEY = b'"delta":"'
cdef tuple STREAM_EVENT_PREFIXES = tuple([b'{"type":"%s"' % t.encode() for t in STREAM_EVENT_TYPES])
cdef str PCM16 = "pcm16"
cdef str C2U = "client_to_upstream"
cdef str U2C = "upstream_to_client"
cdef enum:
    MIN_JUDGED_BYTES = 256  # relay.core.audio._MIN_JUDGED_BYTES


def constants():
    """The reference's constants as this build has them (a test compares them)."""
    return {
        "MIN_JUDGED_BYTES": MIN_JUDGED_BYTES,
        "MAX_EARLY_MESSAGES": MAX_EARLY_MESSAGES,
        "MAX_EARLY_BYTES": MAX_EARLY_BYTES,
        "AUDIO_DELTA_PREFIX": AUDIO_DELTA_PREFIX,
        "STREAM_EVENT_PREFIXES": STREAM_EVENT_PREFIXES,
    }


cdef inline double _clock() noexcept:
    """``time.perf_counter()`` and ``time.monotonic()``: both this clock on Linux."""
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return now.tv_sec + now.tv_nsec * 1e-9


cdef class Lane:
    """What the lanes share: the frame metrics' cells for their event type and direction."""

    cdef object conversation
    cdef list cell  # [frames, bytes]
    cdef double* bounds  # the latency buckets' upper bounds, inclusive
    cdef Py_ssize_t nbounds
    cdef list counts  # one per bucket, then +Inf
    cdef list latency_sum  # [seconds]

    def __cinit__(self):
        self.bounds = NULL

    def __dealloc__(self):
        PyMem_Free(self.bounds)

    cdef _count(self, str direction, str event_type):
        cdef Py_ssize_t i
        frames = self.conversation.metrics.frames
        self.cell = frames.cell(direction, event_type)
        bounds, self.counts, self.latency_sum = frames.latency_cells(direction)
        self.nbounds = len(bounds)
        self.bounds = <double*>PyMem_Malloc(max(self.nbounds, 1) * sizeof(double))
        if self.bounds == NULL:
            raise MemoryError()
        for i in range(self.nbounds):
            self.bounds[i] = bounds[i]

    cdef inline void _counted(self, Py_ssize_t size, double seconds) except *:
        self._counted_in(self.cell, size, seconds)

    cdef inline void _counted_in(self, list cell, Py_ssize_t size, double seconds) except *:
        """``FrameMetrics.frame`` and ``FrameMetrics.latency`` (bisect_left over the bounds)."""
        cdef Py_ssize_t low = 0, high = self.nbounds, middle
        cell[0] += 1
        cell[1] += size
        while low < high:
            middle = (low + high) // 2
            if self.bounds[middle] < seconds:
                low = middle + 1
            else:
                high = middle
        counts = self.counts
        counts[low] += 1
        total = self.latency_sum
        total[0] += seconds

    cdef bint c_take(self, object data) except -1:
        return False

    def take(self, data):
        return self.c_take(data)


cdef class AppendLane(Lane):
    """``relay.io.lanes.PyAppendLane``. The conversation's parts it reads are made with it and
    never replaced (only its link changes), so it holds them."""

    cdef InputAudioCheck input_audio
    cdef AudioAccount account
    cdef ReadinessGate gate
    cdef AudioRetention retention
    cdef FramePath _upstream  # the current link's connection, as ``relink`` was last told
    cdef Py_ssize_t fast_path_bytes  # the checker's, set when it is made

    def __init__(self, conversation):
        self.conversation = conversation
        checker = conversation.checker
        self.fast_path_bytes = checker._fast_path_bytes
        self.input_audio = checker.input_audio
        self.account = checker.account
        self.gate = conversation.gate
        self.retention = conversation.supervisor.state.audio
        self.relink(conversation.link)
        self._count(C2U, APPEND)

    @property
    def upstream(self):
        """The connection appends go to when nothing holds them (None: no upstream)."""
        return self._upstream

    def relink(self, link):
        """The conversation's link changed (``Conversation.link``, a property, says so): the
        lane then never reads the conversation, a Python object cold in the cache, per frame."""
        self._upstream = None if link is None else <FramePath?>link.conn

    cdef bint c_take(self, object data) except -1:
        cdef double received = _clock()
        cdef object audio
        cdef FramePath upstream
        cdef InputAudioCheck check = self.input_audio
        cdef ReadinessGate gate = self.gate
        cdef Py_ssize_t size
        if not PyBytes_CheckExact(data):
            return False
        # ClientEventChecker.take_append and InputAudioCheck.take_plain
        if PyBytes_GET_SIZE(data) > self.fast_path_bytes:
            return False
        audio = c_decode_plain_append(data)
        if audio is None:
            return False
        size = PyBytes_GET_SIZE(audio)
        if check.encoding == PCM16:
            if not check._carry and not size & 3 and size >= MIN_JUDGED_BYTES:
                if c_looks_like_float32(audio):
                    return False
            elif check.take_streamed(audio) is None:
                return False
        self.account.bytes += size
        # ReadinessGate.must_hold, then the send
        upstream = self._upstream
        if (
            upstream is None
            or gate._held
            or not gate.session_ready
            or gate.pending_updates > 0
            or not upstream.c_send(data, OP_TEXT)
        ):
            self.conversation.forward_upstream(data, APPEND, None)
        else:  # compiled from relay/core/retention.py: a C call
            self.retention.append(audio, _clock())
        self._counted(PyBytes_GET_SIZE(data), _clock() - received)
        return True


cdef class DeltaLane(Lane):
    """``relay.io.lanes.PyDeltaLane``, holding the same parts as ``AppendLane``."""

    cdef object link, state, supervisor
    cdef SentLog log
    cdef list stream_cells

    def __init__(self, conversation, link):
        self.conversation = conversation
        self.link = link
        self.supervisor = conversation.supervisor
        self.state = self.supervisor.state
        self.log = conversation.sent
        self._count(U2C, AUDIO_DELTA)
        frames = conversation.metrics.frames
        self.stream_cells = [frames.cell(U2C, t) for t in STREAM_EVENT_TYPES]

    cdef bint c_take(self, object data) except -1:
        cdef object conversation = self.conversation, client
        cdef SentLog log = self.log
        cdef double received
        cdef Py_ssize_t size, kind
        if not PyBytes_CheckExact(data):
            return False
        size = PyBytes_GET_SIZE(data)
        if size < PyBytes_GET_SIZE(AUDIO_DELTA_PREFIX) or memcmp(
            PyBytes_AS_STRING(data), PyBytes_AS_STRING(AUDIO_DELTA_PREFIX), PyBytes_GET_SIZE(AUDIO_DELTA_PREFIX)
        ) != 0:
            kind = _stream_event_kind(data)
            if kind < 0:
                return False
        else:
            kind = -1
        client = conversation.client
        # Not the current upstream, a beta client, no client attached: the full path's cases.
        if self.link is not conversation.link or conversation.beta is not None or log.detached:
            return False
        if not isinstance(client, FramePath):
            return False
        received = _clock()
        if kind >= 0:
            return self._take_stream_event(<bytes>data, <FramePath>client, kind, received)
        state = self.state
        if state.partial is not None:  # SessionState.on_audio_delta
            state.partial_audio_bytes += _delta_chars(data) * 3 // 4
        log.append(data)  # Conversation.to_client: compiled from relay/core/resume.py, a C call
        (<FramePath>client).c_send(data, OP_TEXT)
        self._counted(size, _clock() - received)
        return True

    cdef bint _take_stream_event(self, bytes data, FramePath client, Py_ssize_t kind, double received) except -1:
        if not self.supervisor.passes_stream_events:
            return False
        try:
            event = _json_loads(data)
        except ValueError:  # orjson.JSONDecodeError: the full path's to answer
            return False
        if not isinstance(event, dict):
            return False
        self.state.on_server_event(event)
        self.log.append(data)
        client.c_send(data, OP_TEXT)
        self._counted_in(<list>self.stream_cells[kind], PyBytes_GET_SIZE(data), _clock() - received)
        return True


cdef Py_ssize_t _stream_event_kind(bytes data):
    """Which of ``STREAM_EVENT_TYPES`` the frame is, from its first bytes (-1: none)."""
    cdef Py_ssize_t kind = 0, n = PyBytes_GET_SIZE(data)
    cdef bytes prefix
    for prefix in STREAM_EVENT_PREFIXES:
        if n >= PyBytes_GET_SIZE(prefix) and memcmp(
            PyBytes_AS_STRING(data), PyBytes_AS_STRING(prefix), PyBytes_GET_SIZE(prefix)
        ) == 0:
            return kind
        kind += 1
    return -1


cdef Py_ssize_t _delta_chars(bytes data):
    """``relay.io.frames.delta_chars``."""
    cdef const char* p = PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), start, k = PyBytes_GET_SIZE(DELTA_KEY)
    cdef const char* key = PyBytes_AS_STRING(DELTA_KEY)
    cdef const void* end
    start = 0
    while start + k <= n:
        if memcmp(p + start, key, k) == 0:
            start += k
            end = memchr(p + start, 0x22, n - start)
            if end == NULL:
                return 0
            return <const char*>end - (p + start)
        start += 1
    return 0
