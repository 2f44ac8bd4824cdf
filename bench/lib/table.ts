// Markdown tables for the benchmark report.

export interface Column {
  key: string;
  title: string;
  /** Decimal places for numbers (default 0). */
  digits?: number;
  /** Right-align (numbers); default true. */
  numeric?: boolean;
}

export type Cell = number | string | undefined | null;

export interface TableRow {
  id: string;
  label: string;
  values: Record<string, Cell>;
}

/** 12345.6 → "12,346"; NaN/undefined → "–". */
export function formatCell(v: Cell, digits = 0): string {
  if (v === undefined || v === null) return '–';
  if (typeof v === 'string') return v;
  if (!Number.isFinite(v)) return '–';
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** A ratio as "2.31×", "–" when missing. */
export function formatRatio(v: Cell): string {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '–';
  return `${v.toFixed(2)}×`;
}

function escapeCell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

export function markdownTable(columns: readonly Column[], rows: readonly TableRow[]): string {
  const head = ['#', 'configuration', ...columns.map((c) => c.title)];
  const align = ['--:', ':--', ...columns.map((c) => (c.numeric === false ? ':--' : '--:'))];
  const lines = [`| ${head.map(escapeCell).join(' | ')} |`, `|${align.join('|')}|`];
  for (const r of rows) {
    const cells = [r.id, r.label, ...columns.map((c) => (c.key.startsWith('ratio') ? formatRatio(r.values[c.key]) : formatCell(r.values[c.key], c.digits)))];
    lines.push(`| ${cells.map(escapeCell).join(' | ')} |`);
  }
  return lines.join('\n');
}
