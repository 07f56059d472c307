"""npm run bench: chunkvault against the hardware ceilings and its peers (restic, borg) on the
same volumes and cache state. Writes results/<stamp>/{results.json,results.md,mbps.svg}.

Env: BENCH_DIR (work dir, default /var/tmp/chunkvault-bench), BENCH_SIZE_MIB (2048), BENCH_RUNS (3),
BENCH_QUICK=1 (256 MiB, 1 run, no peers), BENCH_INSTALL_PEERS=1 (apt-get restic borgbackup),
BENCH_PEERS=0 (skip peers), BENCH_OBJSTORE=1 (add Swift and S3 rows against a local Swift),
BENCH_SERVICE=0 (skip the service load test; LOAD_* variables tune it, see service-load.mjs).
"""
import json, os, platform, shutil, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, 'lib'))
import report, volumes  # noqa: E402

QUICK = os.environ.get('BENCH_QUICK') == '1'
SIZE_MIB = int(os.environ.get('BENCH_SIZE_MIB', '256' if QUICK else '2048'))
RUNS = int(os.environ.get('BENCH_RUNS', '1' if QUICK else '3'))
WORK = os.environ.get('BENCH_DIR', '/var/tmp/chunkvault-bench')
CV = [shutil.which('node') or 'node', os.path.join(ROOT, 'dist/src/cli/main.js')]
PASSWORD = 'bench-password-not-secret'


def drop_caches():
    subprocess.run(['sync'])
    try:
        with open('/proc/sys/vm/drop_caches', 'w') as f:
            f.write('3\n')
    except OSError:
        pass  # not permitted: runs are warm-cache then (reported in the machine section)


def timed(cmd, env=None, stdin=None, cwd=None):
    """Runs cmd on a cold page cache: wall and CPU seconds, peak RSS (rusage of that process tree)."""
    import tempfile
    drop_caches()
    with open(stdin or os.devnull, 'rb') as fin, tempfile.TemporaryFile() as fout, tempfile.TemporaryFile() as ferr:
        t = time.monotonic()
        p = subprocess.Popen(cmd, stdin=fin, stdout=fout, stderr=ferr, env={**os.environ, **(env or {})}, cwd=cwd)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            ferr.seek(0)
            raise RuntimeError(f'{" ".join(cmd)} failed ({p.returncode}): {ferr.read().decode()[-2000:]}')
    return {'wall': wall, 'cpu': ru.ru_utime + ru.ru_stime, 'rss_mib': ru.ru_maxrss / 1024}


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def same(a, b):
    return subprocess.run(['cmp', '-s', a, b]).returncode == 0


class Tool:
    """One backup tool with settings: init, backup (full, then incremental), restore."""
    def __init__(self, name, init, backup, restore, env=None):
        self.name, self.init, self.backup, self.restore, self.env = name, init, backup, restore, env or {}


def chunkvault_tool(extra=(), name='chunkvault', repo=None):
    def paths(run_dir):
        return ['--repo', repo or os.path.join(run_dir, 'repo'), '--catalog', os.path.join(run_dir, 'catalog.db')]
    def backup(run_dir, image, incremental):
        return CV + ['backup', image, '--volume-id', 'bench-volume', *(['--incremental'] if incremental else []), *extra, *paths(run_dir), '--json', '--quiet']
    def restore(run_dir, target):
        out = subprocess.run(CV + ['list', '--json', *paths(run_dir)], capture_output=True, check=True)
        last = json.loads(out.stdout)[-1]['id']
        return CV + ['restore', last, target, *paths(run_dir), '--quiet'], None
    return Tool(name, lambda run_dir: None, backup, restore)


def restic_tool(name, extra=(), stdin=False):
    env = {'RESTIC_PASSWORD': PASSWORD}
    def init(run_dir):
        subprocess.run(['restic', '-r', f'{run_dir}/repo', 'init'], check=True, capture_output=True, env={**os.environ, **env, 'RESTIC_CACHE_DIR': f'{run_dir}/cache'})
    def backup(run_dir, image, incremental):
        base = ['restic', '-r', f'{run_dir}/repo', '--cache-dir', f'{run_dir}/cache', 'backup', *extra, '--quiet']
        return (base + ['--stdin', '--stdin-filename', 'volume.img'], image) if stdin else (base + [image], None)
    def restore(run_dir, target):
        os.makedirs(f'{run_dir}/restore', exist_ok=True)
        return ['restic', '-r', f'{run_dir}/repo', '--cache-dir', f'{run_dir}/cache', 'restore', 'latest', '--target', f'{run_dir}/restore'], None
    return Tool(name, init, backup, restore, env)


def borg_tool(name, extra=()):
    env = {'BORG_PASSPHRASE': PASSWORD}
    def init(run_dir):
        subprocess.run(['borg', 'init', '-e', 'repokey', f'{run_dir}/repo'], check=True, capture_output=True, env={**os.environ, **env, 'BORG_BASE_DIR': f'{run_dir}/base'})
    def backup(run_dir, image, incremental):
        return ['borg', 'create', *extra, f'{run_dir}/repo::{"inc" if incremental else "full"}', 'volume.img'], None
    def restore(run_dir, target):
        os.makedirs(f'{run_dir}/restore', exist_ok=True)
        return ['borg', 'extract', f'{run_dir}/repo::inc'], f'{run_dir}/restore'
    return Tool(name, init, backup, restore, env)


def run_tool(tool, images, run_dir):
    """Full backup of vol.img, incremental of vol-inc.img (same path for the peers), restore of the latter."""
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    env = {**tool.env, 'BORG_BASE_DIR': f'{run_dir}/base', 'RESTIC_CACHE_DIR': f'{run_dir}/cache'}
    tool.init(run_dir)
    link = os.path.join(run_dir, 'volume.img')  # one path for both versions, as a block device would be
    steps = {}
    for step, image in (('full', images['vol']), ('incremental', images['inc'])):
        if os.path.exists(link):
            os.remove(link)
        os.link(image, link)
        cmd = tool.backup(run_dir, link, step == 'incremental')
        cmd, stdin = cmd if isinstance(cmd, tuple) else (cmd, None)
        r = timed(cmd, env, stdin, cwd=run_dir)
        r['repo_bytes'] = du(os.path.join(run_dir, 'repo'))
        steps[step] = r
    target = os.path.join(run_dir, 'restored.img')
    cmd, cwd = tool.restore(run_dir, target)
    r = timed(cmd, env, cwd=cwd)
    restored = target if os.path.exists(target) else next(
        (os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(run_dir, 'restore')) for f in fs if f == 'volume.img'), None)
    if not restored or not same(restored, images['inc']):
        raise RuntimeError(f'{tool.name}: restored image differs from the source')
    steps['restore'] = r
    return steps


def median_steps(runs):
    out = {}
    for step in runs[0]:
        out[step] = {k: statistics.median(r[step][k] for r in runs) for k in runs[0][step]}
    return out


def ceilings(image):
    rows = {}
    for name, cmd in (('cat (cold read)', ['cat', image]), ('openssl sha256', ['openssl', 'sha256', image]),
                      ('md5sum', ['md5sum', image]), ('zstd -1 -T1', ['zstd', '-q', '-1', '-T1', '-c', image]),
                      ('zstd -3 -T1', ['zstd', '-q', '-3', '-T1', '-c', image])):
        if shutil.which(cmd[0]):
            p = timed(['sh', '-c', ' '.join(cmd) + ' > /dev/null'])
            rows[name] = {'wall': p['wall'], 'cpu': p['cpu']}
    return rows


def sparse_run(image, run_dir):
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    tool = chunkvault_tool()
    b = timed(tool.backup(run_dir, image, False))
    target = os.path.join(run_dir, 'restored.img')
    r = timed(tool.restore(run_dir, target)[0])
    if not same(target, image):
        raise RuntimeError('sparse image restored differently')
    allocated = os.stat(target).st_blocks * 512
    return {'backup': b, 'restore': r, 'repo_bytes': du(os.path.join(run_dir, 'repo')), 'restored_allocated': allocated,
            'image_allocated': os.stat(image).st_blocks * 512}


def machine():
    def sh(c):
        return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    return {
        'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'kernel': platform.release(),
        'cpu': sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(), 'cores': os.cpu_count(),
        'memory': sh("free -h | awk '/Mem:/{print $2}'"), 'fs': sh(f"df -T {WORK} | awk 'NR==2{{print $2}}'"),
        'node': sh('node --version'), 'restic': sh('restic version 2>/dev/null | head -1'), 'borg': sh('borg --version 2>/dev/null'),
        'drop_caches': os.access('/proc/sys/vm/drop_caches', os.W_OK), 'size_mib': SIZE_MIB, 'runs': RUNS,
    }


def main():
    if os.environ.get('BENCH_INSTALL_PEERS') == '1':
        subprocess.run(['apt-get', '-o', 'DPkg::Lock::Timeout=600', 'install', '-y', '-qq', '--no-install-recommends', 'restic', 'borgbackup', 'zstd'], check=True)
    vdir = os.path.join(WORK, f'volumes-{SIZE_MIB}')
    volumes.main(vdir, SIZE_MIB)
    images = {'vol': os.path.join(vdir, 'vol.img'), 'inc': os.path.join(vdir, 'vol-inc.img'), 'sparse': os.path.join(vdir, 'sparse.img')}
    tools = [chunkvault_tool(), chunkvault_tool(['--chunk-size', '50M'], 'chunkvault 50 MiB chunks')]
    if os.environ.get('BENCH_OBJSTORE') == '1':
        env = subprocess.run(['bash', os.path.join(ROOT, 'scripts/swift-saio.sh'), 'start'], check=True)
        for line in subprocess.run(['bash', os.path.join(ROOT, 'scripts/swift-saio.sh'), 'env'], capture_output=True, text=True).stdout.split('\n'):
            for kv in line.replace('export ', '').split():
                k, _, v = kv.partition('=')
                os.environ[k] = v
        stamp = str(int(time.time()))
        tools.append(chunkvault_tool(name='chunkvault swift', repo=f'swift://bench-{stamp}?auth=http://127.0.0.1:8080/auth/v1.0'))
        tools.append(chunkvault_tool(name='chunkvault s3', repo=f's3://bench-s3-{stamp}?endpoint=http://127.0.0.1:8080&region=us-east-1'))
    if not QUICK and os.environ.get('BENCH_PEERS') != '0':
        if shutil.which('restic'):
            tools += [restic_tool('restic (auto compression, file)'), restic_tool('restic (auto, --stdin)', stdin=True)]
        if shutil.which('borg'):
            tools += [borg_tool('borg lz4', ['--compression', 'lz4']), borg_tool('borg zstd,3', ['--compression', 'zstd,3']),
                      borg_tool('borg lz4 fixed 4 MiB', ['--compression', 'lz4', '--chunker-params', 'fixed,4194304'])]
    results = {'machine': machine(), 'image_bytes': os.path.getsize(images['vol']), 'tools': {}}
    # Rounds: every tool (and every ceiling) once per round, so that a shared machine's slow
    # spells weigh on all of them alike; medians over the rounds.
    runs = {tool.name: [] for tool in tools}
    ceiling_runs = []
    for i in range(RUNS):
        print(f'[bench] round {i + 1}/{RUNS}: ceilings', file=sys.stderr, flush=True)
        ceiling_runs.append(ceilings(images['vol']))
        for tool in tools:
            print(f'[bench] round {i + 1}/{RUNS}: {tool.name}', file=sys.stderr, flush=True)
            runs[tool.name].append(run_tool(tool, images, os.path.join(WORK, 'run')))
    for tool in tools:
        results['tools'][tool.name] = median_steps(runs[tool.name])
    results['ceilings'] = {name: {k: statistics.median(c[name][k] for c in ceiling_runs) for k in ('wall', 'cpu')}
                           for name in ceiling_runs[0]}
    results['walls'] = {name: {step: [round(r[step]['wall'], 2) for r in rs] for step in rs[0]} for name, rs in runs.items()}
    if os.environ.get('BENCH_SERVICE') != '0':
        print('[bench] service load test', file=sys.stderr, flush=True)
        out = subprocess.run(['node', os.path.join(HERE, 'service-load.mjs'), os.path.join(WORK, 'service')],
                             check=True, capture_output=True, text=True).stdout
        results['service'] = json.loads(out)
    print('[bench] sparse image', file=sys.stderr, flush=True)
    results['sparse'] = sparse_run(images['sparse'], os.path.join(WORK, 'run'))
    results['sparse']['image_bytes'] = os.path.getsize(images['sparse'])
    shutil.rmtree(os.path.join(WORK, 'run'), ignore_errors=True)
    out_dir = os.path.join(HERE, 'results', time.strftime('%Y%m%dT%H%M%SZ', time.gmtime()))
    os.makedirs(out_dir)
    with open(os.path.join(out_dir, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)
    md = report.markdown(results)
    with open(os.path.join(out_dir, 'results.md'), 'w') as f:
        f.write(md)
    with open(os.path.join(out_dir, 'mbps.svg'), 'w') as f:
        f.write(report.svg(results))
    print(md)
    print(f'[bench] results in {out_dir}', file=sys.stderr)


if __name__ == '__main__':
    main()
