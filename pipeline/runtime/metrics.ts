import { timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import client, { type Registry } from "prom-client";
import { ConfigError } from "./errors.js";
import type { Logger } from "./log.js";

// Prometheus metrics for every service: one registry per service (no global
// state, so tests build as many as they like), process metrics (CPU, RSS,
// heap, event-loop lag) from prom-client's default collectors, and a small
// HTTP listener that serves the registry on a loopback port.
//
// Hot paths never touch a metric: services keep plain counters they already
// have (stats objects) and the metrics read them when Prometheus scrapes
// (`collect`), so a scrape every 15 s costs the pipeline nothing per frame.

export type { Registry };

/** Name prefix of every platform metric. */
export const PREFIX = "cea_";

export interface RegistryOptions {
  /** prom-client's process and Node.js metrics (default true; off in unit tests that count series). */
  processMetrics?: boolean;
}

/** A registry for one service, with the process metrics and `cea_service_info{service}`. */
export function createRegistry(service: string, opts: RegistryOptions = {}): Registry {
  const registry = new client.Registry();
  if (opts.processMetrics !== false) {
    // eventLoopMonitoringPrecision: the event-loop delay histogram's sampling (ms)
    client.collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 20 });
  }
  const info = new client.Gauge({
    name: `${PREFIX}service_info`,
    help: "Always 1; the service's name and version as labels",
    labelNames: ["service", "version"],
    registers: [registry],
  });
  info.set({ service, version: process.env.npm_package_version ?? "0.1.0" }, 1);
  return registry;
}

type Labels<L extends string> = Partial<Record<L, string | number>>;

/**
 * A counter whose value is read from a running total at scrape time (the
 * service's own stats), so the hot path only bumps a plain number.
 * `read` returns [labels, total] pairs; totals must never decrease.
 */
export function counterFrom<L extends string = never>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly L[],
  read: () => Iterable<readonly [Labels<L>, number]>,
): client.Counter<L> {
  return new client.Counter<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      // every label set from the start, at 0 too: rate() and increase() need the series before the first event
      for (const [labels, total] of read()) this.inc(labels, Math.max(0, total));
    },
  });
}

/**
 * A gauge read at scrape time. `read` returns [labels, value] pairs; a label
 * set it no longer returns disappears. When `read` fails (say the database is
 * down) the gauge has no samples for that scrape and the rest of the
 * exposition is still served; `onError` hears why.
 */
export function gaugeFrom<L extends string = never>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly L[],
  read: () => Iterable<readonly [Labels<L>, number]> | Promise<Iterable<readonly [Labels<L>, number]>>,
  onError?: (err: unknown) => void,
): client.Gauge<L> {
  let failed = false;
  const gauge = new client.Gauge<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    async collect() {
      let values: Iterable<readonly [Labels<L>, number]>;
      try {
        values = await read();
        failed = false;
      } catch (err) {
        failed = true;
        this.reset();
        onError?.(err);
        return;
      }
      this.reset();
      for (const [labels, v] of values) this.set(labels, v);
    },
  });
  // an unlabelled gauge would otherwise show 0 after a failed read, which is a value, not "unknown"
  const get = gauge.get.bind(gauge);
  gauge.get = async () => {
    const m = await get();
    return failed ? { ...m, values: [] } : m;
  };
  return gauge;
}

/**
 * A histogram fed in bulk: a batch adds all its observations in one call
 * (`observeSorted`, a binary search per bucket bound for values in order,
 * e.g. the lags of a batch's entries in stream order) instead of one call per
 * value. Exposed in Prometheus' histogram format.
 */
export class BulkHistogram {
  readonly type = "histogram";
  readonly aggregator = "sum";
  private readonly counts: Float64Array;
  private sum = 0;
  private count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[],
    registry: Registry,
  ) {
    for (let i = 1; i < buckets.length; i++)
      if (!(buckets[i]! > buckets[i - 1]!)) throw new Error(`${name}: bucket bounds must increase`);
    this.counts = new Float64Array(buckets.length);
    registry.registerMetric(this as unknown as client.Metric);
  }

  observe(value: number): void {
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]!) this.counts[i]!++;
    this.sum += value;
    this.count++;
  }

  /**
   * Add `n` observations f(0) … f(n-1) that are monotonic in i (either
   * direction) — e.g. now minus each entry's append time, in stream order.
   * `sum` is their sum when the caller has it, else it is computed.
   */
  observeSorted(n: number, f: (i: number) => number, sum?: number): void {
    if (n <= 0) return;
    const rising = f(0) <= f(n - 1);
    for (let b = 0; b < this.buckets.length; b++) {
      const bound = this.buckets[b]!;
      // number of i with f(i) <= bound
      let lo = 0;
      let hi = n;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        const inside = f(mid) <= bound;
        if (rising ? inside : !inside) lo = mid + 1;
        else hi = mid;
      }
      this.counts[b]! += rising ? lo : n - lo;
    }
    if (sum === undefined) {
      sum = 0;
      for (let i = 0; i < n; i++) sum += f(i);
    }
    this.sum += sum;
    this.count += n;
  }

  /** What prom-client's registry reads: the sample lines of this histogram. */
  get(): {
    name: string;
    help: string;
    type: "histogram";
    aggregator: "sum";
    values: { metricName: string; labels: Record<string, string | number>; value: number }[];
  } {
    const values = this.buckets.map((b, i) => ({
      metricName: `${this.name}_bucket`,
      labels: { le: b } as Record<string, string | number>,
      value: this.counts[i]!,
    }));
    values.push({ metricName: `${this.name}_bucket`, labels: { le: "+Inf" }, value: this.count });
    values.push({ metricName: `${this.name}_sum`, labels: {}, value: this.sum });
    values.push({ metricName: `${this.name}_count`, labels: {}, value: this.count });
    return { name: this.name, help: this.help, type: "histogram", values, aggregator: "sum" };
  }

  reset(): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
  }
}

export interface MetricsServerOptions {
  host: string;
  port: number;
  /** When set, a scrape must send `Authorization: Bearer <token>`. */
  token?: string | undefined;
  log: Logger;
  /** The setting that chose the port, named when it cannot be bound. */
  setting?: string;
}

export interface MetricsServer {
  /** The port it listens on (the one asked for, or the kernel's pick for 0). */
  port: number;
  url: string;
  close(): Promise<void>;
}

const isLoopback = (host: string) => host === "localhost" || host === "::1" || /^127\./.test(host);

/** Serve `GET /metrics` (and `/` as a pointer to it) for a registry. */
export async function serveMetrics(registry: Registry, opts: MetricsServerOptions): Promise<MetricsServer> {
  const expected = opts.token ? Buffer.from(`Bearer ${opts.token}`) : null;
  if (!expected && !isLoopback(opts.host))
    opts.log.warn({ host: opts.host }, "metrics served beyond loopback without a token (set CEA_METRICS_TOKEN)");
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (expected) {
      const got = Buffer.from(req.headers.authorization ?? "");
      if (got.length !== expected.length || !timingSafeEqual(got, expected)) {
        res.writeHead(401, { "www-authenticate": 'Bearer realm="metrics"' }).end("unauthorized\n");
        return;
      }
    }
    if (path === "/") {
      res.writeHead(200, { "content-type": "text/plain; charset=utf-8" }).end("metrics at /metrics\n");
      return;
    }
    if (path !== "/metrics") {
      res.writeHead(404).end("not found\n");
      return;
    }
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { "content-type": registry.contentType }).end(req.method === "HEAD" ? undefined : text);
      },
      (err: unknown) => {
        opts.log.warn({ err: (err as Error).message }, "metrics collection failed");
        res.writeHead(500, { "content-type": "text/plain; charset=utf-8" }).end("metrics collection failed\n");
      },
    );
  };
  const server: Server = createServer(handler);
  server.keepAliveTimeout = 65_000; // longer than Prometheus' scrape interval, so connections are reused
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) =>
      reject(
        new ConfigError(
          `cannot serve metrics on ${opts.host}:${opts.port}${opts.setting ? ` (${opts.setting})` : ""}: ${err.message}`,
        ),
      ),
    );
    server.listen(opts.port, opts.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const hostForUrl = opts.host.includes(":") ? `[${opts.host}]` : opts.host;
  opts.log.info({ host: opts.host, port }, "serving Prometheus metrics at /metrics");
  return {
    port,
    url: `http://${hostForUrl}:${port}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export interface KeptMetricsServer {
  /** The listener while it is up, else undefined (port taken: retrying). */
  current(): MetricsServer | undefined;
  close(): Promise<void>;
}

/**
 * Serve the metrics for a service whose real work must never wait on them: a
 * port that cannot be bound is logged as an error and retried every
 * `retryMs` (Prometheus meanwhile shows the target down), instead of stopping
 * the service and with it the readings.
 */
export function keepServingMetrics(
  registry: Registry,
  opts: MetricsServerOptions & { retryMs?: number },
): KeptMetricsServer {
  let server: MetricsServer | undefined;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let failures = 0;
  const attempt = () => {
    serveMetrics(registry, opts).then(
      (s) => {
        if (closed) void s.close();
        else server = s;
        if (failures) opts.log.info({ port: s.port }, "metrics served again");
      },
      (err: Error) => {
        if (failures++ === 0)
          opts.log.error({ err: err.message }, "metrics not served; retrying (the service goes on)");
        if (!closed) {
          timer = setTimeout(attempt, opts.retryMs ?? 30_000);
          timer.unref();
        }
      },
    );
  };
  attempt();
  return {
    current: () => server,
    async close() {
      closed = true;
      clearTimeout(timer);
      await server?.close();
    },
  };
}
