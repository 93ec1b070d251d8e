"""Its top level takes minutes: the SIGKILL test kills the deploy while it imports."""
import time

time.sleep(600)


async def app(scope, receive, send):
    pass
