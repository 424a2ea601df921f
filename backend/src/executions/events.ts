import type { EventBus, ExecutionEvent } from '../bus/bus.js';

/** What a subscriber to one execution hears: its events, or word that some may have been lost. */
export type ExecutionUpdate = ExecutionEvent | 'resync';

/**
 * The bus's execution events, by execution: one bus listener per process, whatever the number
 * of open event streams, each of which hears only its own execution (and every `resync`).
 */
export class ExecutionEventHub {
  private readonly listeners = new Map<string, Set<(update: ExecutionUpdate) => void>>();
  private readonly unsubscribe: () => void;

  constructor(bus: EventBus) {
    this.unsubscribe = bus.subscribe((message) => {
      if (message.kind === 'resync') {
        for (const set of this.listeners.values()) for (const listener of set) listener('resync');
        return;
      }
      if (message.kind !== 'step' && message.kind !== 'execution') return;
      const set = this.listeners.get(message.executionId);
      if (set) for (const listener of set) listener(message);
    });
  }

  /** Hears one execution's updates until the returned function is called. */
  subscribe(executionId: string, listener: (update: ExecutionUpdate) => void): () => void {
    let set = this.listeners.get(executionId);
    if (!set) this.listeners.set(executionId, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0 && this.listeners.get(executionId) === set) this.listeners.delete(executionId);
    };
  }

  close(): void {
    this.unsubscribe();
    this.listeners.clear();
  }
}
