"""The aiohttp application key under which the shared :class:`VoiceServer` lives."""
from aiohttp import web

SERVER_KEY: web.AppKey = web.AppKey("voicestream_server")
