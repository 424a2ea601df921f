import { describe, expect, it } from 'vitest';
import { WakeablePause } from '../src/lib/wakeable-pause.js';

/** Whether the pause has ended once pending callbacks and timers due by now have run. */
async function endedSoon(pause: Promise<void>): Promise<boolean> {
  let ended = false;
  void pause.then(() => (ended = true));
  await new Promise((resolve) => setTimeout(resolve, 20));
  return ended;
}

describe('WakeablePause', () => {
  it('keeps a wake-up that arrives between pauses, also after a pause that ended by its timer', async () => {
    const pause = new WakeablePause();
    pause.beginTurn();
    await pause.pause(1); // ends by its timer
    pause.beginTurn();
    pause.wake(); // announced while the turn is busy
    expect(await endedSoon(pause.pause(60_000))).toBe(true);
  });

  it('ends a pause under way on a wake-up, and spends wake-ups when a turn begins', async () => {
    const pause = new WakeablePause();
    const waiting = pause.pause(60_000);
    pause.wake();
    expect(await endedSoon(waiting)).toBe(true);
    pause.beginTurn();
    const next = pause.pause(60_000);
    expect(await endedSoon(next)).toBe(false);
    pause.wake();
    await next;
  });

  it('drops the wake-ups of a failed turn, so its backoff holds', async () => {
    const pause = new WakeablePause();
    pause.beginTurn();
    pause.wake();
    pause.forgetWakeUps();
    const backoff = pause.pause(60_000);
    expect(await endedSoon(backoff)).toBe(false);
    pause.wake();
    await backoff;
  });
});
