"""The relay's signer, as a user's key runs it (its authorized_keys command):

    python -I -S signclient.py SOCKET USER

It passes USER and SSH_ORIGINAL_COMMAND ("sign SITE/TARGET") to the relay process over its
private socket, prints the answer (one JSON line) and exits 0, or prints the refusal as tether
prints an error and exits with its code. Run with -I -S, it imports nothing but the standard
library, and the relay, warm, does the work: a certificate costs a small interpreter's start,
not tether's.
"""

import json
import os
import socket
import sys

LIMIT = 64 * 1024
TIMEOUT = 30.0


def main(argv: list[str]) -> int:
    path, user = argv[1], argv[2]
    asked = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    request = json.dumps({"user": user, "asked": asked[:1024]}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(path)
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while len(data) <= LIMIT and (chunk := sock.recv(65536)):
                data += chunk
        reply = json.loads(data)
    except (OSError, ValueError):
        print("tether: error: the relay's signer does not answer", file=sys.stderr)
        return 4
    if "answer" in reply:
        print(json.dumps(reply["answer"]))
        return 0
    print(f"tether: error: {reply.get('error', 'refused')}", file=sys.stderr)
    code = reply.get("exit_code")
    return code if isinstance(code, int) and 0 < code < 128 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
