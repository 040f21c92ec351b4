/**
 * The shard workers' lifecycle: spawn with an init message and wait for "ready", post, ask a question
 * that gets exactly one answer, stop, and notice death. Every wait between threads here settles: on
 * the answer, on the worker's death, or on a timeout.
 *
 * @module
 */
import type { FromWorker, ToWorker, WorkerInit } from "./protocol.ts";

/** Messages a worker sends as the answer to one request, matched by `requestId`. */
type Answer = Extract<FromWorker, { type: "flushed" | "released" }>;

/** Settings of a pool. */
export interface WorkerPoolOptions {
  /** Module every worker runs. */
  workerUrl: URL;
  /** Every message a worker sends, answers included, in arrival order. */
  onMessage(index: number, message: FromWorker): void;
  /** A live worker failed (uncaught error) or was killed; it is already terminated. */
  onDeath(index: number, reason: string): void;
  /** How long a worker may take from spawn to "ready". */
  startTimeoutMs?: number;
}

interface Member {
  worker: Worker;
  isAlive: boolean;
  /** Unanswered asks by request id: each settles with the answer's error (null = success). */
  asks: Map<number, (error: string | null) => void>;
  onStopped: () => void;
}

/** Generous: a cold start compiles the worker's modules, slow on a loaded 2-core machine. */
const DEFAULT_START_TIMEOUT_MS = 120_000;

/** A fixed set of worker slots, each holding at most one live Worker. */
export class WorkerPool {
  #o: WorkerPoolOptions;
  #members = new Map<number, Member>();
  #nextRequestId = 1;

  constructor(options: WorkerPoolOptions) {
    this.#o = options;
  }

  /**
   * Starts a worker in slot `index` (a dead one is replaced) and resolves once it reported ready.
   * Rejects, with the worker terminated, if it fails or stays silent past the start timeout.
   */
  spawn(index: number, init: WorkerInit): Promise<void> {
    const previous = this.#members.get(index);
    if (previous?.isAlive) {
      throw new Error(`Cannot spawn worker ${index}: the previous one is still alive`);
    }
    const worker = new Worker(this.#o.workerUrl, { type: "module" });
    const member: Member = { worker, isAlive: true, asks: new Map(), onStopped: () => {} };
    this.#members.set(index, member);
    const timeoutMs = this.#o.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
    return new Promise<void>((resolve, reject) => {
      let isStarting = true;
      const timer = setTimeout(() => {
        if (!isStarting) return;
        isStarting = false;
        this.#die(index, member, `did not report ready within ${timeoutMs} ms`, false);
        reject(new Error(`Cannot start worker ${index}: no "ready" within ${timeoutMs} ms`));
      }, timeoutMs);
      worker.onmessage = (e: MessageEvent<FromWorker>) => {
        const message = e.data;
        if (isStarting && message.type === "ready") {
          isStarting = false;
          clearTimeout(timer);
          resolve();
        }
        this.#receive(index, member, message);
      };
      worker.onerror = (e: ErrorEvent) => {
        e.preventDefault();
        if (isStarting) {
          isStarting = false;
          clearTimeout(timer);
          this.#die(index, member, e.message, false);
          reject(new Error(`Cannot start worker ${index}: ${e.message}`));
          return;
        }
        this.#die(index, member, e.message, true);
      };
      worker.postMessage({ type: "init", init } satisfies ToWorker);
    });
  }

  /** Whether slot `index` holds a live worker. */
  isAlive(index: number): boolean {
    return this.#members.get(index)?.isAlive ?? false;
  }

  /** Posts a message to a live worker; messages to a dead slot are dropped (its state is gone). */
  post(index: number, message: ToWorker): void {
    const member = this.#members.get(index);
    if (member?.isAlive) member.worker.postMessage(message);
  }

  /**
   * Sends a request built around a fresh request id and resolves with the error of its answer (null
   * when it succeeded), or with a reason when the worker dies or does not answer within `timeoutMs`.
   */
  ask(
    index: number,
    build: (requestId: number) => ToWorker,
    timeoutMs: number,
  ): Promise<string | null> {
    const member = this.#members.get(index);
    if (member === undefined || !member.isAlive) {
      return Promise.resolve(`worker ${index} is not running`);
    }
    const requestId = this.#nextRequestId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        member.asks.delete(requestId);
        resolve(`worker ${index} did not answer within ${timeoutMs} ms`);
      }, timeoutMs);
      member.asks.set(requestId, (error) => {
        clearTimeout(timer);
        resolve(error);
      });
      member.worker.postMessage(build(requestId));
    });
  }

  /** Terminates a live worker now, settling its asks, and reports its death (a restart follows). */
  kill(index: number, reason: string): void {
    const member = this.#members.get(index);
    if (member?.isAlive) this.#die(index, member, reason, true);
  }

  /** Terminates a live worker now, settling its asks, without reporting a death. */
  terminate(index: number, reason: string): void {
    const member = this.#members.get(index);
    if (member?.isAlive) this.#die(index, member, reason, false);
  }

  /**
   * Asks every live worker to stop (they close their database pools), waits up to `timeoutMs`, then
   * terminates them. No death is reported: this is the orderly end.
   */
  async stopAll(timeoutMs = 5_000): Promise<void> {
    const alive = [...this.#members].filter(([, m]) => m.isAlive);
    const stopped = Promise.all(
      alive.map(([, member]) => new Promise<void>((resolve) => (member.onStopped = resolve))),
    );
    for (const [, member] of alive) member.worker.postMessage({ type: "stop" } satisfies ToWorker);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    await Promise.race([stopped, timeout]);
    clearTimeout(timer);
    for (const [index, member] of alive) this.#die(index, member, "stopped", false);
  }

  #receive(index: number, member: Member, message: FromWorker): void {
    if (message.type === "stopped") member.onStopped();
    if (isAnswer(message) && message.requestId !== null) {
      const settle = member.asks.get(message.requestId);
      member.asks.delete(message.requestId);
      settle?.(message.error);
    }
    this.#o.onMessage(index, message);
  }

  #die(index: number, member: Member, reason: string, isReported: boolean): void {
    if (!member.isAlive) return;
    member.isAlive = false;
    member.worker.terminate();
    for (const settle of member.asks.values()) settle(`worker ${index} died: ${reason}`);
    member.asks.clear();
    if (isReported) this.#o.onDeath(index, reason);
  }
}

function isAnswer(message: FromWorker): message is Answer {
  return message.type === "flushed" || message.type === "released";
}
