"""A relay's end of its feed (feed.py): one `ssh` to a signer, kept up across the signers the
bundle names (the next one after a failure, with backoff), that brings the policy, the
revocation list and the CAs' trusted keys down and takes signing requests, audit lines and
status up."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import itertools
import logging
import signal
from collections.abc import Callable

from tether.backoff import Backoff
from tether.errors import AccessRefused, TetherError, TransportUnreachableError, visible
from tether.gateway.feed import MAX_LINE, Trusted, decode, encode
from tether.procs import Pinned
from tether.spec import Endpoint

log = logging.getLogger("tether")

SIGN_TIMEOUT = 10.0
# Audit lines kept while no signer is reachable, sent when one is: beyond this many the oldest
# are dropped, and the drop itself is recorded.
MAX_QUEUED = 100_000
REFUSED = "Permission denied"
REFUSALS_FATAL = 3  # logins refused in a row (by every signer tried) before the relay gives up


class FeedLink:
    """The feed to the first reachable of ``signers``; ``argv`` builds the ssh command for one,
    and ``on_state`` takes each policy, revocation list and CAs' keys (None from a signer
    that sends none) a signer sends."""

    def __init__(
        self,
        signers: tuple[Endpoint, ...],
        argv: Callable[[Endpoint], list[str]],
        on_state: Callable[[bytes, bytes, Trusted | None], None],
    ) -> None:
        self.signers = signers
        self.argv = argv
        self.on_state = on_state
        self.up = asyncio.Event()
        self.signer: Endpoint | None = None  # the one in use
        self.last_error: str | None = None
        self.refused: str | None = None
        self._stdin: asyncio.StreamWriter | None = None
        self._process: Pinned | None = None
        self._pending: dict[int, asyncio.Future[dict[str, object]]] = {}
        self._ids = itertools.count(1)
        self._queue: collections.deque[bytes] = collections.deque()
        self._dropped = 0

    async def keep(self) -> None:
        """Until cancelled, or until every signer keeps refusing this relay (``refused``)."""
        backoff = Backoff(0.5, 10.0)
        attempt = refusals = 0
        for signer in itertools.cycle(self.signers):
            attempt += 1
            said = await self._once(signer)
            if self.up.is_set():
                attempt = 1
            self.up.clear()
            self._fail_pending()
            if any(REFUSED in line for line in said):
                refusals += 1
                if refusals >= REFUSALS_FATAL:
                    self.refused = f"signer {signer} refused this relay's certificate"
                    return
            else:
                refusals = 0
            last = said[-1] if said else "ssh exited"
            self.last_error = f"feed from signer {signer} ended: {last}"
            log.warning("relay: %s", self.last_error)
            await asyncio.sleep(backoff.delay(attempt))

    async def _once(self, signer: Endpoint) -> list[str]:
        process = await asyncio.create_subprocess_exec(
            *self.argv(signer),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=MAX_LINE,
        )
        self._process = Pinned.child(process.pid)
        said: list[str] = []

        async def errors() -> None:
            assert process.stderr is not None
            async for raw in process.stderr:
                line = visible(raw.decode(errors="replace").strip())
                if line:
                    said[:] = [*said[-20:], line]

        listening = asyncio.ensure_future(errors())
        try:
            assert process.stdout is not None
            while line := await process.stdout.readline():
                self._heard(line, signer, process.stdin)
            await process.wait()
            await listening
        except (ValueError, asyncio.LimitOverrunError):
            said.append("the signer sent a line too long")
        finally:
            listening.cancel()
            self._stdin = None
            self.stop()
        return said

    def _heard(self, line: bytes, signer: Endpoint, stdin: asyncio.StreamWriter | None) -> None:
        try:
            message = decode(line)
        except ValueError:
            return
        if "policy" in message:
            try:
                policy = str(message["policy"]).encode()
                revoked = base64.b64decode(str(message.get("krl", "")), validate=True)
            except ValueError:
                return
            self.on_state(policy, revoked, Trusted.parse(message))
            if not self.up.is_set():
                # After an outage, say so where the outage was said (a warning).
                said = log.warning if self.last_error else log.info
                said("relay: fed by signer %s", signer)
                self.signer, self._stdin = signer, stdin
                self.up.set()
                self._flush()
        elif "signed" in message or "refused" in message:
            ident = message.get("signed", message.get("refused"))
            future = self._pending.pop(ident, None) if isinstance(ident, int) else None
            if future is not None and not future.done():
                future.set_result(message)

    async def sign(self, user: str, site: str, target: str) -> dict[str, object]:
        """A signer's certificate for ``user``'s key for ``site``/``target``: the signed message
        (certificate, serial, valid_before), or tether's error (AccessRefused if refused)."""
        if self._stdin is None:
            raise TransportUnreachableError("no signer is reachable from this relay")
        ident = next(self._ids)
        future: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        self._stdin.write(encode({"sign": ident, "user": user, "site": site, "target": target}))
        try:
            answer = await asyncio.wait_for(future, SIGN_TIMEOUT)
        except TimeoutError:
            raise TransportUnreachableError("the signer did not answer in time") from None
        finally:
            self._pending.pop(ident, None)
        if "refused" in answer:
            code = answer.get("exit_code")
            error = TetherError(visible(str(answer.get("error", "refused"))))
            if code == AccessRefused.exit_code:
                error = AccessRefused(error.message)
            elif isinstance(code, int):
                error.exit_code = code
            raise error
        return answer

    def audit(self, event: str, **fields: object) -> None:
        """Send a session's audit line, or keep it until a signer is reachable."""
        line = encode({"audit": {"event": event, **fields}})
        if self._stdin is not None:
            self._stdin.write(line)
            return
        if len(self._queue) >= MAX_QUEUED:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append(line)

    def status(self, status: dict[str, object]) -> None:
        """Tell the signer how this relay is (dropped while none is reachable: the next one
        counts)."""
        if self._stdin is not None:
            self._stdin.write(encode({"status": status}))

    def _flush(self) -> None:
        if self._dropped:
            self.audit("lost", count=self._dropped)
            self._dropped = 0
        while self._queue and self._stdin is not None:
            self._stdin.write(self._queue.popleft())

    def _fail_pending(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_result({"refused": 0, "error": "the signer went away", "exit_code": 4})
        self._pending.clear()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.signal(signal.SIGTERM)
            process.close()
