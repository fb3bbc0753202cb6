import type { DestinationStream } from "pino";
import { type Logger, pino } from "pino";

/**
 * The API's logger. Request logs carry the headers (useful behind a proxy), so
 * the Authorization header is redacted wherever it appears; the token itself is
 * never logged. JSON for journald; pretty only when a person watches a TTY.
 */
export function createBackendLogger(level: string, destination?: DestinationStream): Logger {
  const opts = {
    name: "cea-backend",
    level,
    redact: {
      paths: ["req.headers.authorization", "headers.authorization", "req.headers.cookie", "token"],
      censor: "[redacted]",
    },
    serializers: {
      req: (req: { method: string; url: string; id: string; ip?: string; headers: Record<string, unknown> }) => ({
        id: req.id,
        method: req.method,
        url: req.url,
        remote: req.ip,
        headers: req.headers,
      }),
    },
  };
  if (destination) return pino(opts, destination);
  if (process.stdout.isTTY === true) {
    return pino({
      ...opts,
      transport: { target: "pino-pretty", options: { colorize: true, translateTime: "SYS:HH:MM:ss.l" } },
    });
  }
  return pino(opts);
}
