import { type Logger, pino } from "pino";

export type { Logger };

/** JSON logs for journald; human-readable ones only when a person is watching. */
export function createLogger(name: string, level: string): Logger {
  const pretty = process.stdout.isTTY === true;
  return pino({
    name,
    level,
    redact: { paths: ["req.headers.authorization", "headers.authorization", "token"], censor: "[redacted]" },
    ...(pretty
      ? { transport: { target: "pino-pretty", options: { colorize: true, translateTime: "SYS:HH:MM:ss.l" } } }
      : {}),
  });
}
