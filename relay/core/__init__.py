"""Sans-I/O core: no asyncio, aiohttp or websockets imports here (see design.md)."""
