import helpers  # noqa: F401  (helpers imports a module that does not exist)


async def app(scope, receive, send):
    pass
