import { signUp } from './seed.js';
import { CountedLoad, TRUSTED_ORIGIN, assertStillServing, autonodeEnv, generateSecret, log, median, startAutonodeServer, withBenchDatabase, type LoadResult } from './support.js';

const RUNS = 3;
const LOAD_SECONDS = 8;
const WARM_UP_SECONDS = 3;
const CONNECTIONS = 10;

export interface SignInResults {
  readonly okPerSecond: number;
  readonly p99Ms: number;
  readonly failures: number;
  readonly peakRssMiB: number | undefined;
}

/** A different client address per request (198.18.0.0/15 is reserved for benchmarks). */
function benchmarkAddress(): string {
  const value = Math.floor(Math.random() * 2 ** 17);
  return `198.${18 + (value >> 16)}.${(value >> 8) & 0xff}.${value & 0xff}`;
}

/**
 * Benchmark 4: password sign-ins per second. Sign-in is rate-limited per client address
 * (AUTH_RATE_LIMIT_MAX per window), so from one address nearly every request would be a 429:
 * the server trusts X-Forwarded-For (TRUST_PROXY, as behind the Caddy proxy) and every request
 * comes from another address, as real sign-ins from many people would. The limiter still runs.
 */
export async function runSignIn(): Promise<SignInResults> {
  return withBenchDatabase('autonode_bench_signin', async (database) => {
    const env = { ...autonodeEnv(database.url, generateSecret()), ENGINE_ENABLED: 'false', TRUST_PROXY: 'true' };
    const server = await startAutonodeServer('autonode-server', env);
    try {
      const user = await signUp(server.baseUrl, 'bench-sign-in@bench.test', 'bench-password-1234');
      const signIns = new CountedLoad(
        {
          url: `${server.baseUrl}/api/auth/sign-in/email`,
          method: 'POST',
          headers: { 'content-type': 'application/json', origin: TRUSTED_ORIGIN },
          body: JSON.stringify({ email: user.email, password: user.password }),
          connections: CONNECTIONS,
          requests: [{ setupRequest: (request) => ({ ...request, headers: { ...request.headers, 'x-forwarded-for': benchmarkAddress() } }) }],
        },
        LOAD_SECONDS,
      );
      const stillServing = () => assertStillServing('Autonode', `${server.baseUrl}/api/v1/me`, { cookie: user.cookie });
      await signIns.warmUp(WARM_UP_SECONDS);
      await stillServing();
      const runs: LoadResult[] = [];
      for (let run = 0; run < RUNS; run += 1) {
        const result = await signIns.run();
        runs.push(result);
        log(`sign-in run ${run + 1}: ${result.okPerSecond.toFixed(1)} sign-ins/s, p99 ${result.p99Ms} ms over ${result.seconds.toFixed(1)} s, failures ${result.failures} (${result.failureDetail})`);
        await stillServing();
      }
      const failures = runs.reduce((sum, run) => sum + run.failures, 0);
      if (failures > 0) log(`WARNING: sign-in: ${failures} failed requests`);
      return {
        okPerSecond: median(runs.map((run) => run.okPerSecond)),
        p99Ms: median(runs.map((run) => run.p99Ms)),
        failures,
        peakRssMiB: server.process.peakRssMiB(),
      };
    } finally {
      await server.process.stop();
    }
  });
}
