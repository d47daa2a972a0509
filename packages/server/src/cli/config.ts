import { describeConfig, resolveConfig } from '../config.js';

/** `cycles config`: the effective configuration (defaults, file, environment), secrets masked. */
export function printConfig(env: Record<string, string | undefined>, out: (line: string) => void = (l) => process.stdout.write(l + '\n')): void {
  const resolved = resolveConfig(env);
  out(`# effective configuration${resolved.file ? ` (file: ${resolved.file})` : ''}; secrets are masked`);
  for (const line of describeConfig(resolved)) out(line);
}
