"""Turns bench results into a Markdown table (every figure also as a ratio to chunkvault's) and an SVG plot."""

MB = 1e6
STEPS = ('full', 'incremental', 'restore')


def _mbps(results, seconds):
    return results['image_bytes'] / MB / seconds if seconds else 0


def markdown(results):
    m = results['machine']
    base = results['tools']['chunkvault']
    out = [f"# chunkvault benchmark ({m['date']})", '',
           f"Machine: {m['cores']} cores, {m['cpu']}, {m['memory']} RAM, kernel {m['kernel']}, {m['fs']}; node {m['node']}; "
           f"{m['restic'] or 'restic: not installed'}; {m['borg'] or 'borg: not installed'}. Page cache dropped before every step: "
           f"{'yes' if m['drop_caches'] else 'no (warm cache)'}. Volume {m['size_mib']} MiB ext4 image; medians of {m['runs']} round(s), each running every tool and ceiling once.",
           '', 'MB/s = volume bytes / wall seconds. `x` = how many times longer than chunkvault (wall), i.e. chunkvault\'s speed-up.', '',
           '| tool | full s (MB/s) | x | incremental s (MB/s) | x | restore s (MB/s) | x | CPU s full/incr/restore | peak RSS MiB | repo after full | added by incr |',
           '|---|---|---|---|---|---|---|---|---|---|---|']
    for name, t in results['tools'].items():
        cells = [name]
        for step in STEPS:
            w = t[step]['wall']
            cells += [f"{w:.2f} ({_mbps(results, w):.0f})", f"{w / base[step]['wall']:.2f}"]
        cells.append('/'.join(f"{t[s]['cpu']:.1f}" for s in STEPS))
        cells.append(f"{max(t[s]['rss_mib'] for s in STEPS):.0f}")
        if t['full']['repo_bytes']:
            cells.append(f"{t['full']['repo_bytes'] / MB:.0f} MB")
            cells.append(f"{(t['incremental']['repo_bytes'] - t['full']['repo_bytes']) / MB:.1f} MB")
        else:  # an object store: its size on disk is not the repository's
            cells += ['–', '–']
        out.append('| ' + ' | '.join(cells) + ' |')
    out += ['', '## Ceilings on the same image (one pass over it)', '', '| command | wall s | MB/s | chunkvault full backup / this |', '|---|---|---|---|']
    for name, c in results['ceilings'].items():
        out.append(f"| {name} | {c['wall']:.2f} | {_mbps(results, c['wall']):.0f} | {base['full']['wall'] / c['wall']:.2f} |")
    s = results['sparse']
    out += ['', '## Sparse image', '',
            f"{s['image_bytes'] / 2**30:.0f} GiB image, {s['image_allocated'] / 2**30:.2f} GiB allocated: backup {s['backup']['wall']:.2f} s "
            f"(CPU {s['backup']['cpu']:.1f} s, RSS {s['backup']['rss_mib']:.0f} MiB), restore {s['restore']['wall']:.2f} s "
            f"(CPU {s['restore']['cpu']:.1f} s); repository {s['repo_bytes'] / MB:.0f} MB; restored file allocates "
            f"{s['restored_allocated'] / 2**30:.2f} GiB.", '']
    if 'service' in results:
        a, j = results['service']['api'], results['service']['jobs']
        out += ['## Service load (loopback, PostgreSQL catalog)', '',
                f"API: {a['clients']} concurrent clients, {a['requests']} requests (reads, with 1 in 20 a queued backup) in "
                f"{a['seconds']:.1f} s = {a['requests_per_second']:.0f} req/s, {a['errors']} errors, while the workers run the queued backups.", '',
                '| route | count | p50 ms | p90 ms | p99 ms | max ms |', '|---|---|---|---|---|---|']
        for name, l in [('all', a['latency_ms'])] + list(a['by_route_ms'].items()):
            out.append(f"| {name} | {l['count']} | {l['p50']:.1f} | {l['p90']:.1f} | {l['p99']:.1f} | {l['max']:.1f} |")
        out += ['', f"Jobs: {j['count']} backups of {j['volume_mib']} MiB random volumes (8 volumes, full then incremental) queued at once, "
                f"{j['workers']} worker processes: {j['seconds']:.1f} s = {j['jobs_per_second']:.1f} jobs/s, {j['mb_per_second']:.0f} MB/s, "
                f"{j['failed']} failed; queue wait p50/p99 {j['queue_wait_ms']['p50']}/{j['queue_wait_ms']['p99']} ms, "
                f"run time p50/p99 {j['run_ms']['p50']}/{j['run_ms']['p99']} ms.", '']
    return '\n'.join(out)


def svg(results):
    tools = list(results['tools'])
    colors = ['#1f77b4', '#ff7f0e', '#2ca02c']
    w, h, left, top, bar = 900, 60 + 70 * len(tools), 230, 40, 18
    vals = {(t, s): _mbps(results, results['tools'][t][s]['wall']) for t in tools for s in STEPS}
    vmax = max(vals.values()) or 1
    scale = (w - left - 80) / vmax
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<text x="{left}" y="20" font-size="14">MB/s per tool and step ({results["machine"]["size_mib"]} MiB volume, cold cache)</text>']
    for i, s in enumerate(STEPS):
        parts.append(f'<rect x="{w - 200 + i * 65}" y="8" width="10" height="10" fill="{colors[i]}"/><text x="{w - 186 + i * 65}" y="17">{s}</text>')
    for ti, t in enumerate(tools):
        y0 = top + ti * 70
        parts.append(f'<text x="{left - 8}" y="{y0 + 32}" text-anchor="end">{t}</text>')
        for si, s in enumerate(STEPS):
            v = vals[(t, s)]
            y = y0 + si * (bar + 2)
            parts.append(f'<rect x="{left}" y="{y}" width="{max(1, v * scale):.1f}" height="{bar}" fill="{colors[si]}"/>')
            parts.append(f'<text x="{left + v * scale + 4:.1f}" y="{y + 13}">{v:.0f}</text>')
    parts.append('</svg>')
    return '\n'.join(parts)
