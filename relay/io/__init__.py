"""The I/O shell: aiohttp client handler, upstream connector, supervisor."""
