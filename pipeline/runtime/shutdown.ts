import type { Logger } from "./log.js";

/**
 * One handler for SIGTERM/SIGINT: the first signal starts a graceful stop
 * (`stop` resolves when the service is done), a second signal or the timeout
 * forces the exit. A graceful stop exits 0; a failed one exits 1.
 */
export function onShutdown(log: Logger, stop: () => Promise<void>, timeoutMs = 15_000): void {
  let stopping = false;
  const handler = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.warn({ signal }, "second signal: forcing exit");
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, "stopping");
    const timer = setTimeout(() => {
      log.error({ timeoutMs }, "graceful stop timed out: forcing exit");
      process.exit(1);
    }, timeoutMs);
    timer.unref();
    stop().then(
      () => {
        log.info("stopped");
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, "stop failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", handler);
  process.on("SIGINT", handler);
}

/**
 * Entry-point wrapper: an error that escapes main, and any rejection or
 * exception nobody handled, is written to stderr and exits 1 (systemd restarts
 * the service), never 0 and never Node's own abrupt end.
 */
export function runMain(main: () => Promise<void>): void {
  const fail = (what: string) => (err: unknown) => {
    const e = err as Error;
    // ConfigError messages are written for the operator; print them plainly.
    if (e?.name === "ConfigError") process.stderr.write(`${e.message}\n`);
    else process.stderr.write(`${what}${e?.stack ?? String(err)}\n`);
    process.exit(1);
  };
  process.on("unhandledRejection", fail("unhandled rejection: "));
  process.on("uncaughtException", fail("uncaught exception: "));
  main().catch(fail(""));
}
