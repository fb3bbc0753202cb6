// Ordered, bounded lanes for the sequential stages. Each lane is entered in
// batch order by at most `concurrency` batches at once, and a batch passes the
// lanes in chain order, so every batch is committed before it is acknowledged
// while batch N+1 may commit as batch N acks (or beside it, on a second
// connection, when the writer's concurrency is 2).

export class Lane {
  private last: Promise<void> = Promise.resolve();
  private active = 0;
  private waiting: (() => void)[] = [];
  constructor(readonly concurrency: number) {}

  /** Take a place in batch order now; `enter` later waits for the turn and a free slot. */
  reserve(): { enter: () => Promise<void>; leave: () => void } {
    const prev = this.last;
    let entered!: () => void;
    this.last = new Promise<void>((r) => {
      entered = r;
    });
    let inside = false;
    return {
      enter: async () => {
        await prev;
        // a slot freed by leave() passes straight to the first waiter (active unchanged)
        if (this.active >= this.concurrency) await new Promise<void>((r) => this.waiting.push(r));
        else this.active++;
        inside = true;
        entered();
      },
      leave: () => {
        entered(); // a batch that never entered (it failed earlier) must not hold up the next
        if (!inside) return;
        inside = false;
        const next = this.waiting.shift();
        if (next) next();
        else this.active--;
      },
    };
  }
}
