import { describe, expect, it } from "vitest";
import { z } from "zod";
import { createLogger } from "../../pipeline/runtime/log.js";
import {
  chain,
  checkChain,
  describeOptions,
  noOptions,
  port,
  type StageSpec,
  stageOptions,
  use,
} from "../../pipeline/runtime/stage.js";
import { RAW_ENTRIES, startWorker, type WorkerSettings } from "../../pipeline/runtime/worker.js";
import { ackOptions } from "../../stages/ack.js";
import { batchCopyOptions } from "../../stages/batch-copy.js";
import { decodeOptions } from "../../stages/decode.js";

// The stage model on its own (no Redis, no PostgreSQL): typed ports, options
// declared by a zod schema and validated at start-up, and a chain whose links
// are checked before anything runs.

const A = port<{ a: number }>("a");
const B = port<{ b: string }>("b");
const C = port<{ c: boolean }>("c");

function stage<I, O>(name: string, consumes: { name: string }, emits: { name: string }): StageSpec<I, O> {
  return {
    name,
    consumes: consumes as never,
    emits: emits as never,
    options: noOptions,
    failure: { classify: () => "fatal", describe: String, backoff: { baseMs: 1, maxMs: 1 } },
    create: () => ({ process: (_b, input) => input as unknown as O }),
  };
}

const aToB = stage<{ a: number }, { b: string }>("a-to-b", A, B);
const bToC = stage<{ b: string }, { c: boolean }>("b-to-c", B, C);

describe("stage chains", () => {
  it("a chain that connects is accepted and described", () => {
    const c = chain(A).pipe(use(aToB, {})).pipe(use(bToC, {}));
    expect(checkChain(c.input, c.stages)).toBe("a → a-to-b → b → b-to-c → c");
  });

  it("the compiler refuses a stage that does not consume what the previous one emits", () => {
    // @ts-expect-error: b-to-c consumes "b", the chain carries "a"
    const wrong = chain(A).pipe(use(bToC, {}));
    expect(wrong.stages.length).toBe(1);
  });

  it("a wrong chain assembled from a list is refused at start-up, naming both ends", () => {
    const list = [use(aToB, {}), use(aToB, {})] as const;
    expect(() => checkChain(A, list)).toThrow(
      'wrong stage chain: stage "a-to-b" consumes "a" but stage "a-to-b" emits "b"',
    );
    expect(() => checkChain(B, [use(aToB, {})])).toThrow(
      'wrong stage chain: stage "a-to-b" consumes "a" but the stream reader emits "b"',
    );
  });

  it("startWorker refuses a wrong chain before it touches Redis", async () => {
    const bad = { input: RAW_ENTRIES, stages: [use(bToC, {})], pipe: () => bad } as never;
    const settings = {} as WorkerSettings; // never read: the check comes first
    await expect(
      startWorker({ settings, log: createLogger("t", "silent"), redis: undefined as never, chain: bad }),
    ).rejects.toThrow('stage "b-to-c" consumes "b" but the stream reader emits "raw-entries"');
  });
});

describe("stage options", () => {
  it("defaults fill what is not given; every option of the product's stages is documented", () => {
    expect(stageOptions({ name: "decode", options: decodeOptions }, {})).toEqual({ threads: 0 });
    expect(stageOptions({ name: "batch-copy", options: batchCopyOptions }, { concurrency: 2 })).toEqual({
      fastPath: true,
      concurrency: 2,
    });
    for (const [name, options] of [
      ["decode", decodeOptions],
      ["batch-copy", batchCopyOptions],
      ["ack", ackOptions],
    ] as const)
      for (const line of describeOptions({ name, options })) expect(line).toMatch(/^[\w-]+\.\w+ \(default .+\): \w+/);
  });

  it("a wrong option stops start-up naming stage and option; so does an unknown one", () => {
    expect(() => stageOptions({ name: "decode", options: decodeOptions }, { threads: -1 })).toThrow(
      /stage "decode", option "threads": .*>=\s*0/,
    );
    expect(() => stageOptions({ name: "batch-copy", options: batchCopyOptions }, { concurency: 2 })).toThrow(
      /stage "batch-copy", option "concurency": /,
    );
    const s = z.object({ n: z.number().int().default(1).describe("n") });
    expect(() => stageOptions({ name: "x", options: s }, { n: "1" })).toThrow(/stage "x", option "n": /);
  });
});
