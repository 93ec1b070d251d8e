async def api(scope, receive, send):
    pass
