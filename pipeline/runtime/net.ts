import { createServer } from "node:net";

/**
 * A TCP port on 127.0.0.1 that nothing listens on right now (bound, then
 * released): the first one from `from` up, or one the kernel picks when `from`
 * is omitted. Tests use it as a closed port too.
 */
export function freePort(from?: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EADDRINUSE" && from !== undefined && from < 65_535) resolve(freePort(from + 1));
      else reject(err);
    });
    srv.listen(from ?? 0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() =>
        addr !== null && typeof addr === "object" ? resolve(addr.port) : reject(new Error("no port bound")),
      );
    });
  });
}
