import { describe, expect, it } from "vitest";
import type { CanFrame } from "../../pipeline/can/frame.js";
import { loadConfig } from "../../pipeline/runtime/config.js";
import { redisKeys } from "../../pipeline/runtime/keys.js";
import { createLogger } from "../../pipeline/runtime/log.js";
import { type ChunkSource, type SourceEnvelope, startScanner } from "../../pipeline/runtime/scanner.js";
import {
  chain,
  checkChain,
  describeOptions,
  noOptions,
  port,
  type StageSpec,
  use,
} from "../../pipeline/runtime/stage.js";
import { IngestLedger } from "../../stages/append/ledger.js";
import { CAN_FRAMES, canIngestOptions } from "../../stages/can-ingest.js";
import { scannerChain, scannerStages } from "../../stages/chains.js";
import { streamAppendOptions } from "../../stages/stream-append.js";

// The scanner's chain in the same stage model as the worker's, without Redis:
// declared, described and validated before anything runs, and the scanner
// runtime's pump (order, backpressure, stop, the end of a source) on stages of
// the test's own.

const log = createLogger("test", "silent");
const config = loadConfig({});
const deps = {
  config,
  redis: undefined as never, // never touched: these tests stop before a stage is created
  keys: redisKeys(config),
  table: undefined as never,
  ledger: new IngestLedger(log),
  spoolFile: "/nonexistent/never-written.spool",
  source: { name: "test", src: "replay" as const },
};

/** A source that fails the test if the scanner takes a chunk from it. */
function untouchedSource(): ChunkSource<CanFrame[]> & { touched: boolean } {
  const s = {
    name: "untouched",
    pausable: true,
    touched: false,
    chunks(): AsyncIterable<CanFrame[]> {
      s.touched = true;
      return (async function* () {})();
    },
    close() {},
    ended: () => null,
  };
  return s;
}

describe("the scanner chain", () => {
  it("is declared like the worker's and described at start-up: frame source → can-ingest → stream-append", () => {
    const c = scannerChain(deps);
    expect(checkChain(c.input, c.stages, "the frame source")).toBe(
      "can-frames → can-ingest → can-entries → stream-append → raw-stream",
    );
    for (const [name, options] of [
      ["can-ingest", canIngestOptions],
      ["stream-append", streamAppendOptions],
    ] as const)
      for (const line of describeOptions({ name, options })) expect(line).toMatch(/^[\w-]+\.\w+ \(default .+\): \w+/);
  });

  it("the compiler refuses stream-append straight after the source", () => {
    const s = scannerStages(deps);
    // @ts-expect-error: stream-append consumes can-entries, the source emits can-frames
    const wrong = chain<CanFrame[], SourceEnvelope>(CAN_FRAMES).pipe(s.streamAppend);
    expect(wrong.stages.length).toBe(1);
  });

  it("a wrong option stops start-up naming stage and option, before the source is read", async () => {
    const s = scannerStages(deps);
    const source = untouchedSource();
    const bad = chain<CanFrame[], SourceEnvelope>(CAN_FRAMES)
      .pipe(use(s.canIngest.spec, { liveEveryMs: 5 }))
      .pipe(use(s.streamAppend.spec, { buffer: 0, chunck: 10 } as never));
    const err = await startScanner({ log, source, chain: bad }).then(
      () => new Error("started"),
      (e: unknown) => e as Error,
    );
    expect(err.name).toBe("ConfigError");
    expect(err.message).toMatch(/stage "can-ingest", option "liveEveryMs": .*>=\s*10\b/);
    expect(err.message).toMatch(/stage "stream-append", option "buffer": .*>=\s*1/);
    expect(err.message).toMatch(/stage "stream-append", option "chunck": /);
    expect(source.touched).toBe(false);
  });

  it("a wrong chain is refused at start-up naming both ends, before the source is read", async () => {
    const s = scannerStages(deps);
    const source = untouchedSource();
    const swapped = { input: CAN_FRAMES, stages: [s.streamAppend, s.canIngest], pipe: () => swapped } as never;
    await expect(startScanner({ log, source, chain: swapped })).rejects.toThrow(
      'wrong stage chain: stage "stream-append" consumes "can-entries" but the frame source emits "can-frames"',
    );
    expect(source.touched).toBe(false);
  });
});

describe("the scanner runtime", () => {
  const NUMS = port<number[]>("nums");
  const SUMS = port<number>("sum");
  const failure = { classify: () => "fatal" as const, describe: String, backoff: { baseMs: 1, maxMs: 1 } };

  /** Records what it saw; `gate` holds a chunk until released (a full buffer). */
  function recorder(events: string[], gate?: { wait: Promise<void> | null }) {
    const sum: StageSpec<number[], number, typeof noOptions, SourceEnvelope> = {
      name: "sum",
      consumes: NUMS,
      emits: SUMS,
      options: noOptions,
      failure,
      create: (ctx) => {
        ctx.stopping?.addEventListener("abort", () => events.push("stopping"));
        return {
          async process(env, nums) {
            events.push(`sum ${env.seq}`);
            if (gate?.wait) await gate.wait;
            return nums.reduce((a, b) => a + b, 0);
          },
          close: () => void events.push("close sum"),
        };
      },
    };
    const sink: StageSpec<number, number, typeof noOptions, SourceEnvelope> = {
      name: "sink",
      consumes: SUMS,
      emits: SUMS,
      options: noOptions,
      failure,
      create: () => ({
        process(env, n) {
          events.push(`sink ${env.seq}=${n}`);
          return n;
        },
        counters: () => ({ seen: events.filter((e) => e.startsWith("sink")).length }),
        close: () => void events.push("close sink"),
      }),
    };
    return chain<number[], SourceEnvelope>(NUMS).pipe(use(sum, {})).pipe(use(sink, {}));
  }

  function listSource(chunks: number[][], events: string[], endError: Error | null = null): ChunkSource<number[]> {
    return {
      name: "list",
      pausable: true,
      async *chunks() {
        for (const c of chunks) {
          events.push(`take ${c.join(",")}`);
          yield c;
        }
      },
      close: () => void events.push("source closed"),
      ended: () => endError,
    };
  }

  it("runs each chunk through every stage in order, takes the next only after the last stage, closes in order", async () => {
    const events: string[] = [];
    const h = await startScanner({ log, source: listSource([[1, 2], [3]], events), chain: recorder(events) });
    expect(h.description).toBe("nums → sum → sum → sink → sum");
    const r = await h.done;
    expect(r).toEqual({ reason: "end", chunks: 2, stages: { sink: { seen: 2 } } });
    expect(events).toEqual(["take 1,2", "sum 1", "sink 1=3", "take 3", "sum 2", "sink 2=3", "close sum", "close sink"]);
  });

  it("a source whose end is a failure drains like a stop, closes every stage, then fails the run", async () => {
    const events: string[] = [];
    const h = await startScanner({
      log,
      source: listSource([[5]], events, new Error("bus gone")),
      chain: recorder(events),
    });
    await expect(h.done).rejects.toThrow("bus gone");
    expect(events).toEqual(["take 5", "sum 1", "sink 1=5", "stopping", "close sum", "close sink"]);
  });

  it("stop() ends the pump after the chunk a waiting stage holds; the result says stop", async () => {
    const events: string[] = [];
    let release!: () => void;
    const gate: { wait: Promise<void> | null } = { wait: new Promise<void>((r) => (release = r)) };
    const h = await startScanner({ log, source: listSource([[1], [2], [3]], events), chain: recorder(events, gate) });
    while (!events.includes("sum 1")) await new Promise((r) => setTimeout(r, 5));
    // the source is held back while the stage waits
    expect(events).toEqual(["take 1", "sum 1"]);
    const stopped = h.stop();
    expect(events).toContain("stopping");
    release();
    expect(await stopped).toMatchObject({ reason: "stop", chunks: 1 });
    expect(events).toEqual(["take 1", "sum 1", "stopping", "source closed", "sink 1=1", "close sum", "close sink"]);
  });

  it("a stage's failure policy decides: an outage retries the same chunk until it passes, a fatal error fails the run", async () => {
    const events: string[] = [];
    let failures = 2;
    const flaky: StageSpec<number[], number, typeof noOptions, SourceEnvelope> = {
      name: "flaky",
      consumes: NUMS,
      emits: SUMS,
      options: noOptions,
      failure: {
        classify: (err) => ((err as Error).message === "outage" ? "retry" : "fatal"),
        describe: (err) => (err as Error).message,
        backoff: { baseMs: 1, maxMs: 2 },
      },
      create: () => ({
        process(env, nums) {
          events.push(`try ${env.seq}`);
          if (nums.includes(-1)) throw new Error("broken");
          if (failures-- > 0) throw new Error("outage");
          return nums.length;
        },
      }),
    };
    const c = chain<number[], SourceEnvelope>(NUMS).pipe(use(flaky, {}));
    const ok = await startScanner({ log, source: listSource([[1, 2]], []), chain: c });
    expect(await ok.done).toMatchObject({ reason: "end", chunks: 1 });
    expect(events).toEqual(["try 1", "try 1", "try 1"]);
    const bad = await startScanner({ log, source: listSource([[-1], [2]], []), chain: c });
    await expect(bad.done).rejects.toThrow("broken");
  });
});
