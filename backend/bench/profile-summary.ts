/**
 * Summarises a V8 CPU profile (node --cpu-prof): self time of the hottest functions, self time
 * grouped by where the code lives (a package, a file of src/, Node's internals), and the busy
 * time spent under each origin (inclusive: a sample counts for every origin on its stack), which
 * answers "how much of the work happens inside zod / drizzle / Better Auth".
 *
 *   node --import tsx bench/profile-summary.ts <file.cpuprofile> [--top=25] [--from=SECONDS]
 *
 * --from skips the samples of the first seconds of the profile (start-up, module loading,
 * seeding), so the summary shows the process under load.
 */
import { readFileSync } from 'node:fs';

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}

interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
  readonly children?: readonly number[];
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly endTime: number;
  readonly samples: readonly number[];
  /** Microseconds since the previous sample (the first: since startTime). */
  readonly timeDeltas: readonly number[];
}

function isCpuProfile(value: unknown): value is CpuProfile {
  return (
    typeof value === 'object' &&
    value !== null &&
    'nodes' in value &&
    Array.isArray(value.nodes) &&
    'samples' in value &&
    Array.isArray(value.samples) &&
    'timeDeltas' in value &&
    Array.isArray(value.timeDeltas)
  );
}

/** Where a function lives: `pkg:<name>` under node_modules, `src/<file>` for ours, else Node or V8. */
function origin(url: string): string {
  if (!url) return '(V8: native, GC, idle)';
  if (url.startsWith('node:')) return 'node: internals';
  const packageMatch = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (packageMatch?.[1]) return `pkg:${packageMatch[1]}`;
  const sourceMatch = /\/backend\/(src\/.+)$/.exec(url);
  if (sourceMatch?.[1]) return sourceMatch[1];
  return url.replace(/^file:\/\//, '');
}

function table(title: string, totals: Map<string, number>, totalSamples: number, msPerSample: number, top: number): string {
  const rows = [...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  const lines = rows.map(([name, samples]) => `${((samples / totalSamples) * 100).toFixed(1).padStart(5)}%  ${(samples * msPerSample).toFixed(0).padStart(7)} ms  ${name}`);
  return [`${title}`, ...lines].join('\n');
}

function option(name: string, fallback: number): number {
  const argument = process.argv.find((candidate) => candidate.startsWith(`--${name}=`));
  return argument ? Number(argument.slice(name.length + 3)) : fallback;
}

function main(): void {
  const file = process.argv.slice(2).find((argument) => !argument.startsWith('--'));
  if (!file) throw new Error('usage: profile-summary.ts <file.cpuprofile> [--top=25] [--from=SECONDS]');
  const top = option('top', 25);
  const fromMicroseconds = option('from', 0) * 1e6;
  const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
  if (!isCpuProfile(parsed)) throw new Error(`${file} is not a V8 CPU profile`);
  const byId = new Map(parsed.nodes.map((node) => [node.id, node]));
  const samplesPerNode = new Map<number, number>();
  let offset = 0;
  let firstCounted: number | undefined;
  let totalSamples = 0;
  parsed.samples.forEach((id, index) => {
    offset += parsed.timeDeltas[index] ?? 0;
    if (offset < fromMicroseconds) return;
    firstCounted ??= offset;
    totalSamples += 1;
    samplesPerNode.set(id, (samplesPerNode.get(id) ?? 0) + 1);
  });
  if (totalSamples === 0) throw new Error('no samples after --from');
  const countedMicroseconds = offset - (firstCounted ?? 0);
  const msPerSample = countedMicroseconds / 1000 / totalSamples;

  const parentOf = new Map<number, number>();
  for (const node of parsed.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);
  const byFunction = new Map<string, number>();
  const byOrigin = new Map<string, number>();
  const underOrigin = new Map<string, number>();
  let idle = 0;
  for (const [id, samples] of samplesPerNode) {
    const frame = byId.get(id)?.callFrame;
    if (!frame) continue;
    if (frame.functionName === '(idle)') idle += samples;
    const where = origin(frame.url);
    const name = `${frame.functionName || '(anonymous)'}  ${where}${frame.url ? `:${frame.lineNumber + 1}` : ''}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + samples);
    byOrigin.set(where, (byOrigin.get(where) ?? 0) + samples);
    if (frame.functionName === '(idle)') continue;
    const onStack = new Set<string>();
    for (let current: number | undefined = id; current !== undefined; current = parentOf.get(current)) {
      const url = byId.get(current)?.callFrame.url;
      if (url) onStack.add(origin(url));
    }
    for (const stackOrigin of onStack) underOrigin.set(stackOrigin, (underOrigin.get(stackOrigin) ?? 0) + samples);
  }
  const busySamples = totalSamples - idle;
  process.stdout.write(
    [
      `${file}: ${totalSamples} samples over ${(countedMicroseconds / 1e6).toFixed(1)} s (from ${(fromMicroseconds / 1e6).toFixed(1)} s), ${((idle / totalSamples) * 100).toFixed(1)}% idle`,
      '',
      table('Self time by origin:', byOrigin, totalSamples, msPerSample, 20),
      '',
      table('Busy time under each origin (inclusive, share of busy samples):', underOrigin, busySamples, msPerSample, 25),
      '',
      table(`Self time, top ${top} functions:`, byFunction, totalSamples, msPerSample, top),
      '',
    ].join('\n'),
  );
}

main();
