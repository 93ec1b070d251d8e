from settings import load_settings

SETTINGS = load_settings()


async def app(scope, receive, send):
    pass
