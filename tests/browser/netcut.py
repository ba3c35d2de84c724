"""A TCP relay on loopback whose link can be cut without closing anything, as when a network
silently dies: bytes are swallowed, no FIN, no RST. Connections made before a cut stay dead
after it is restored; new ones pass again."""

from __future__ import annotations

import socket
import threading


class CuttableRelay:
    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.generation = 0
        self.cut_now = False
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self.lock:
            self.cut_now = True
            self.generation += 1

    def restore(self) -> None:
        with self.lock:
            self.cut_now = False

    def _alive(self, generation: int) -> bool:
        return not self.cut_now and generation == self.generation

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(client)
            with self.lock:
                generation = self.generation
                cut = self.cut_now
            if cut:  # a connection attempt into the void: held open, nothing answers
                threading.Thread(target=self._pump, args=(client, None, -1), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self.sockets.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, generation),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket | None, generation: int) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                if dst is not None and self._alive(generation):
                    dst.close()
                return
            if dst is not None and self._alive(generation):
                try:
                    dst.sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            s.close()
