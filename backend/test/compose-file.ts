import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { DockerfileParser, Env, type Dockerfile, type Instruction } from 'dockerfile-ast';
import { parse } from 'yaml';
import { backendRoot } from './process.js';

export const repoRoot = path.resolve(backendRoot, '..');

export interface ComposeService {
  image?: string;
  build?: string | { context: string };
  container_name?: string;
  ports?: string[];
  expose?: string[];
  environment?: Record<string, string>;
  healthcheck?: { test?: string[]; disable?: boolean };
  depends_on?: Record<string, { condition: string }> | string[];
  volumes?: string[];
  command?: string[] | string;
  pull_policy?: string;
}
export interface ComposeFile {
  name?: string;
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

/** A compose file of the repository, parsed as YAML (anchors resolved), before interpolation. */
export async function readComposeFile(file: string): Promise<ComposeFile> {
  return parse(await readFile(path.join(repoRoot, file), 'utf8'), { merge: true }) as ComposeFile;
}

export function service(file: ComposeFile, name: string): ComposeService {
  const found = file.services[name];
  if (!found) throw new Error(`the compose file has no ${name} service`);
  return found;
}

/** A service's command, which must be exec form (a list): compose then starts it without a shell. */
export function composeCommand(file: ComposeFile, name: string): string[] {
  const command = service(file, name).command;
  if (!Array.isArray(command)) throw new Error(`${name}'s command must be a list (exec form), not ${JSON.stringify(command)}`);
  return command;
}

/** One `${...}` reference of a compose value: the variable and how an unset one is handled. */
export interface ComposeReference {
  readonly variable: string;
  /** `:-`/`-` (default), `:?`/`?` (required: compose refuses to start without it), or none. */
  readonly operator: ':-' | '-' | ':?' | '?' | ':+' | '+' | undefined;
  readonly argument: string | undefined;
}

const referencePattern = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}/g;

export function referencesIn(value: string): ComposeReference[] {
  return [...value.matchAll(referencePattern)].map((match) => ({
    variable: match[1] ?? '',
    operator: match[2] as ComposeReference['operator'],
    argument: match[3],
  }));
}

/**
 * Compose's interpolation of `${VAR}`, `${VAR:-default}` and `${VAR:?error}` (the forms our files
 * use) from `variables`, as `docker compose` does with `.env`: a required variable that is unset or
 * empty throws, as compose refuses to start.
 */
export function interpolate(value: string, variables: Record<string, string>): string {
  return value.replace(referencePattern, (_whole, variable: string, operator: string | undefined, argument: string | undefined) => {
    const current = variables[variable];
    const unset = operator?.startsWith(':') ? !current : current === undefined;
    if (operator?.endsWith('?') && unset) throw new Error(`required variable ${variable} is missing: ${argument ?? ''}`);
    if (operator?.endsWith('-') && unset) return argument ?? '';
    if (operator?.endsWith('+')) return unset ? '' : (argument ?? '');
    return current ?? '';
  });
}

/** A build stage of the Dockerfile: its FROM line's stage name and its instructions in order. */
export interface DockerfileStage {
  readonly name: string | null;
  readonly image: string | null;
  readonly instructions: readonly Instruction[];
}

/** The Dockerfile at the repository root, parsed with dockerfile-ast. */
export async function readDockerfile(): Promise<Dockerfile> {
  return DockerfileParser.parse(await readFile(path.join(repoRoot, 'Dockerfile'), 'utf8'));
}

/** The Dockerfile cut into its stages. */
export async function readDockerfileStages(): Promise<DockerfileStage[]> {
  const dockerfile = await readDockerfile();
  const stages: { name: string | null; image: string | null; instructions: Instruction[] }[] = [];
  for (const instruction of dockerfile.getInstructions()) {
    if (instruction.getKeyword() === 'FROM') {
      const from = dockerfile.getFROMs().find((candidate) => candidate.getRange().start.line === instruction.getRange().start.line);
      stages.push({ name: from?.getBuildStage() ?? null, image: from?.getImage() ?? null, instructions: [] });
    } else {
      stages.at(-1)?.instructions.push(instruction);
    }
  }
  return stages;
}

/** The exec-form (JSON array) words of a CMD or ENTRYPOINT, or undefined for the shell form. */
export function execForm(instruction: Instruction): string[] | undefined {
  const content = instruction.getArgumentsContent()?.trim() ?? '';
  if (!content.startsWith('[')) return undefined;
  const words: unknown = JSON.parse(content);
  return Array.isArray(words) && words.every((word) => typeof word === 'string') ? words : undefined;
}

/** The runtime stage's command: its exec-form CMD after an empty ENTRYPOINT (the image starts it as is). */
export function runtimeCommand(stage: DockerfileStage): { command: string[]; workdir: string } {
  const entrypoints = stage.instructions.filter((instruction) => instruction.getKeyword() === 'ENTRYPOINT');
  const cmds = stage.instructions.filter((instruction) => instruction.getKeyword() === 'CMD');
  const entrypoint = entrypoints.at(-1);
  const cmd = cmds.at(-1);
  if (!cmd) throw new Error('the runtime stage has no CMD');
  const command = execForm(cmd);
  if (!command) throw new Error('the runtime stage CMD is not in exec form');
  if (!entrypoint || execForm(entrypoint)?.length !== 0) throw new Error('the runtime stage must reset ENTRYPOINT to [] so the CMD starts alone');
  const workdirs = stage.instructions.filter((instruction) => instruction.getKeyword() === 'WORKDIR');
  const workdir = workdirs.at(-1)?.getArgumentsContent()?.trim();
  if (!workdir) throw new Error('the runtime stage has no WORKDIR');
  return { command, workdir };
}

/** The ENV the image sets (its runtime stage's ENV instructions). */
export function imageEnvironment(runtime: DockerfileStage): Record<string, string> {
  const environment: Record<string, string> = {};
  for (const instruction of runtime.instructions) {
    if (!(instruction instanceof Env)) continue;
    for (const property of instruction.getProperties()) environment[property.getName()] = property.getValue() ?? '';
  }
  return environment;
}

/** The environment a service's container gets: the image's ENV, then compose's, interpolated from `variables`. */
export async function containerEnvironment(file: ComposeFile, name: string, variables: Record<string, string>): Promise<Record<string, string>> {
  const runtime = (await readDockerfileStages()).at(-1);
  const composeEnvironment = Object.fromEntries(
    Object.entries(service(file, name).environment ?? {}).map(([key, value]) => [key, interpolate(String(value), variables)]),
  );
  return { ...(runtime ? imageEnvironment(runtime) : {}), ...composeEnvironment };
}
