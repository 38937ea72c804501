// The server's `hindsight.status` answer → status bar text, tooltip and the stats report. Pure: no `vscode` import.

export interface Stats {
  requests: number;
  shown: number;
  accepted: number;
  partial: number;
  rejected: number;
  expired: number;
  continued: number;
  acceptance_rate: number; // accepted / shown, 0..1
  latency_p50_ms: number | null;
  latency_p95_ms: number | null;
  rejected_by_reason: Record<string, number>;
}

export interface ServerStatus {
  version: string;
  backend: string;
  model: string;
  modelLoaded: boolean;
  modelError: string | null;
  database: string | null;
  served: number;
  stats: Stats | { error: string } | null;
  /** The learning loop's last run (`hindsight learn`), if the log has one. */
  lastLearning?: LearningRun | null;
  /** The next run: when the server will start one by itself (or that it is under way). */
  nextLearning?: NextLearning | null;
  /** Only in the answer to hindsight.reload: what that reload warned of (it kept the last good model, adapter or gate). */
  reloadProblems?: string[];
}

export interface LearningRun {
  endedAt: number | null; // Unix time
  status: string;
  promoted: { step: string; version: string | null }[];
  reason: string | null;
  /** One line: what it promoted and what that measured, or why nothing was. */
  summary?: string;
}

export interface NextLearning {
  auto: boolean;
  running: boolean;
  stage: string | null;
  when: string;
}

export interface BarInput {
  enabled: boolean;
  /** The last status the server returned, if any since it (re)started. */
  status: ServerStatus | undefined;
  /** Why the server is not usable: it failed to start, stopped, or a status call failed. */
  serverError: string | undefined;
}

export interface BarState {
  text: string;
  tooltip: string;
  kind: 'normal' | 'disabled' | 'error';
}

export function barState({ enabled, status, serverError }: BarInput): BarState {
  if (serverError !== undefined) {
    return { text: '$(error) hindsight', tooltip: `Hindsight server not running: ${serverError}`, kind: 'error' };
  }
  if (status?.modelError) {
    return { text: '$(error) hindsight', tooltip: `Hindsight: the model failed to load: ${status.modelError}`, kind: 'error' };
  }
  const details = status ? describe(status) : ['Hindsight: starting the server…'];
  if (!enabled) {
    return { text: '$(circle-slash) hindsight', tooltip: ['Inline completions off (Hindsight: Toggle)', ...details].join('\n'), kind: 'disabled' };
  }
  const rate = status && hasStats(status.stats) && status.stats.shown > 0 ? ` ${percent(status.stats.acceptance_rate)}` : '';
  const icon = status && !status.modelLoaded ? '$(loading~spin)' : '$(sparkle)';
  return { text: `${icon} hindsight${rate}`, tooltip: details.join('\n'), kind: 'normal' };
}

/** What to tell the user after Hindsight: Reload. */
export function reloadMessage(status: ServerStatus): { level: 'info' | 'warning' | 'error'; text: string } {
  if (status.modelError) return { level: 'error', text: `Hindsight: the model failed to load: ${status.modelError}` };
  const problems = status.reloadProblems ?? [];
  if (problems.length) return { level: 'warning', text: problems.join('\n') };
  return { level: 'info', text: `Hindsight reloaded: ${status.model}` };
}

/** The status as a few lines of text, for the tooltip and the stats report. */
export function describe(status: ServerStatus): string[] {
  const model = status.modelError
    ? `model ${status.model}: failed to load (${status.modelError})`
    : `model ${status.model}${status.modelLoaded ? '' : ' (loading)'}`;
  const lines = [`Hindsight ${status.version}: ${status.backend} backend, ${model}`];
  const stats = status.stats;
  if (stats === null) {
    lines.push('No statistics (no database)');
  } else if (!hasStats(stats)) {
    lines.push(`Statistics unavailable: ${stats.error}`);
  } else if (stats.shown === 0) {
    lines.push('No suggestions shown yet');
  } else {
    lines.push(`Accepted ${stats.accepted} of ${stats.shown} shown (${percent(stats.acceptance_rate)}), ${stats.partial} partly`);
    const reasons = Object.entries(stats.rejected_by_reason).map(([reason, n]) => `${reason} ${n}`);
    lines.push(`Rejected ${stats.rejected}${reasons.length ? ` (${reasons.join(', ')})` : ''}, expired ${stats.expired}`);
    if (stats.latency_p50_ms !== null && stats.latency_p95_ms !== null) {
      lines.push(`Latency p50 ${Math.round(stats.latency_p50_ms)} ms, p95 ${Math.round(stats.latency_p95_ms)} ms`);
    }
  }
  const run = status.lastLearning;
  if (run) {
    const when = run.endedAt ? new Date(run.endedAt * 1000).toISOString().slice(0, 16).replace('T', ' ') : '?';
    const what = run.summary ?? (run.promoted.length ? `promoted ${run.promoted.map((p) => `${p.step} ${p.version}`).join(', ')}` : run.reason);
    lines.push(`Last learning run ${when} UTC, ${run.status}: ${what}`);
  }
  if (status.nextLearning) lines.push(`Next learning run: ${status.nextLearning.when}`);
  if (status.database) lines.push(`Database: ${status.database}`);
  return lines;
}

/** The stats report shown by "Hindsight: Show Statistics": the summary, then the raw status. */
export function statsReport(status: ServerStatus): string {
  return [...describe(status), '', JSON.stringify(status, null, 2)].join('\n');
}

function hasStats(stats: ServerStatus['stats']): stats is Stats {
  return stats !== null && !('error' in stats);
}

function percent(rate: number): string {
  return `${Math.round(rate * 100)}%`;
}
