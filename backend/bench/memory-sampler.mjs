/**
 * Preloaded (`--import ./bench/memory-sampler.mjs`) into a server the list benchmark starts with
 * BENCH_MEMORY_SAMPLER=1: samples process.memoryUsage() and V8's heap spaces every 100 ms and, when
 * the process exits, writes one line `[memory-sampler] {json}` with the sample taken at the peak
 * RSS (what the RSS was made of then) and the peak of each part. Plain JavaScript: it loads before
 * any TypeScript loader.
 */
import v8 from 'node:v8';

const MiB = 2 ** 20;
const round = (bytes) => Math.round((bytes / MiB) * 10) / 10;

/** The resident parts, in MiB: V8's heap by space (committed), off-heap buffers, and the rest. */
function sample() {
  const usage = process.memoryUsage();
  const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((space) => [space.space_name, round(space.physical_space_size)]));
  return {
    rss: round(usage.rss),
    heapTotal: round(usage.heapTotal),
    heapUsed: round(usage.heapUsed),
    external: round(usage.external),
    arrayBuffers: round(usage.arrayBuffers),
    spaces,
  };
}

let atPeak = sample();
const peaks = { ...atPeak, spaces: { ...atPeak.spaces } };
const timer = setInterval(() => {
  const now = sample();
  if (now.rss > atPeak.rss) atPeak = now;
  for (const key of ['rss', 'heapTotal', 'heapUsed', 'external', 'arrayBuffers']) peaks[key] = Math.max(peaks[key], now[key]);
  for (const [space, size] of Object.entries(now.spaces)) peaks.spaces[space] = Math.max(peaks.spaces[space] ?? 0, size);
}, 100);
timer.unref();

process.on('exit', () => {
  process.stderr.write(`[memory-sampler] ${JSON.stringify({ atPeakRss: atPeak, peaks })}\n`);
});
