import socket


def connect(address):
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)))
