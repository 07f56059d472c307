"""Builds the benchmark volumes, the same bytes on every run on a given machine.

  vol.img      an ext4 image (mke2fs -d, never mounted), ~68% used, free space zero:
               system files (a sorted walk of /usr/share and /usr/lib with a byte budget)
               plus seeded generated files: text logs, page-structured DB files, random media
  vol-inc.img  the same with ~2% of its 4 KiB blocks rewritten in clustered runs (edits of
               their old bytes)
  sparse.img   a 4x larger sparse image holding the same files, the rest holes
"""
import hashlib, os, random, shutil, subprocess, sys

FAKE_TIME = '1704067200'  # 2024-01-01: mke2fs's clock and every inode time
MiB = 1 << 20


def system_files(dest, budget):
    """Copies regular files from /usr/share and /usr/lib in sorted order until `budget` bytes."""
    used = 0
    for top in ('/usr/share', '/usr/lib'):
        for root, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                src = os.path.join(root, name)
                if os.path.islink(src) or not os.path.isfile(src):
                    continue
                size = os.path.getsize(src)
                if size == 0 or used + size > budget // 2 * (1 if top == '/usr/share' else 2):
                    continue
                out = os.path.join(dest, src.lstrip('/'))
                os.makedirs(os.path.dirname(out), exist_ok=True)
                shutil.copyfile(src, out)
                used += size
    return used


def generated_files(dest, budget, seed=1):
    rnd = random.Random(seed)
    words = ['volume', 'backup', 'chunk', 'restore', 'error', 'request', 'user', 'GET', 'PUT', 'ok', 'latency',
             'session', 'commit', 'index', 'page', 'node', 'cluster', 'replica', 'disk', 'block']
    used = 0
    os.makedirs(f'{dest}/var/log', exist_ok=True)
    os.makedirs(f'{dest}/srv/db', exist_ok=True)
    os.makedirs(f'{dest}/home/media', exist_ok=True)
    n = 0
    while used < budget:
        kind = n % 3
        size = rnd.randrange(1 * MiB, 12 * MiB)
        if kind == 0:  # logs
            lines = []
            total = 0
            while total < size:
                line = f'2024-01-{rnd.randrange(1, 29):02d}T{rnd.randrange(24):02d}:{rnd.randrange(60):02d}:{rnd.randrange(60):02d}Z ' + \
                       ' '.join(rnd.choice(words) for _ in range(rnd.randrange(5, 15))) + f' id={rnd.getrandbits(48):x}\n'
                lines.append(line)
                total += len(line)
            data = ''.join(lines).encode()
            path = f'{dest}/var/log/app-{n:04d}.log'
        elif kind == 1:  # 8 KiB pages of records, partly empty
            pages = []
            for _ in range(size // 8192):
                records = b''.join(rnd.getrandbits(32).to_bytes(4, 'little') + rnd.choice(words).encode().ljust(28, b'\0')
                                   for _ in range(rnd.randrange(40, 250)))
                pages.append(records[:8192].ljust(8192, b'\0'))
            data = b''.join(pages)
            path = f'{dest}/srv/db/table-{n:04d}.db'
        else:  # incompressible media
            data = rnd.randbytes(size)
            path = f'{dest}/home/media/clip-{n:04d}.bin'
        with open(path, 'wb') as f:
            f.write(data)
        used += len(data)
        n += 1
    return used


def run(*cmd, **kw):
    subprocess.run(cmd, check=True, env={**os.environ, 'E2FSPROGS_FAKE_TIME': FAKE_TIME}, **kw)


def make_fs(image, size, tree, uuid):
    if os.path.exists(image):
        os.remove(image)
    with open(image, 'wb') as f:
        f.truncate(size)
    run('mke2fs', '-q', '-F', '-t', 'ext4', '-b', '4096', '-L', 'benchvol', '-U', uuid,
        '-E', f'hash_seed={uuid},nodiscard,root_owner=0:0', '-d', tree, image)
    # mke2fs -d copies the host's atime/ctime: normalise every inode's times.
    cmds = []
    for root, dirs, files in os.walk(tree):
        for name in dirs + files:
            rel = '/' + os.path.relpath(os.path.join(root, name), tree)
            for field in ('atime', 'ctime', 'mtime', 'crtime'):
                cmds.append(f'sif "{rel}" {field} 20240101000000')
    script = image + '.debugfs'
    with open(script, 'w') as f:
        f.write('\n'.join(cmds) + '\n')
    run('debugfs', '-w', '-f', script, image, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.remove(script)


def rewrite_blocks(image, fraction, seed=2):
    """Rewrites ~fraction of the used 4 KiB blocks in clustered runs (1-64 blocks), as edits
    of what was there: each block's old bytes, rotated, with 16 new random bytes at its start
    (an edited file's blocks, as compressible as before; not fresh random data)."""
    rnd = random.Random(seed)
    size = os.path.getsize(image)
    blocks = size // 4096
    target = int(blocks * fraction)
    changed = 0
    with open(image, 'r+b') as f:
        while changed < target:
            start = rnd.randrange(blocks // 16, blocks * 11 // 16)  # inside the used area
            run_len = min(rnd.randrange(1, 65), target - changed)
            f.seek(start * 4096)
            old = f.read(run_len * 4096)
            new = bytearray()
            for b in range(run_len):
                block = old[b * 4096:(b + 1) * 4096]
                k = rnd.randrange(1, 4096)
                new += rnd.randbytes(16) + (block[k:] + block[:k])[16:]
            f.seek(start * 4096)
            f.write(new)
            changed += run_len
    return changed


def main(work, size_mib):
    size = size_mib * MiB
    os.makedirs(work, exist_ok=True)
    stamp = os.path.join(work, f'.volumes-{size_mib}-edits')
    if os.path.exists(stamp):
        return
    tree = os.path.join(work, 'tree')
    shutil.rmtree(tree, ignore_errors=True)
    os.makedirs(tree)
    used = system_files(tree, int(size * 0.45))
    used += generated_files(tree, int(size * 0.66) - used)
    for root, dirs, files in os.walk(tree):
        for name in dirs + files:
            os.utime(os.path.join(root, name), (int(FAKE_TIME), int(FAKE_TIME)), follow_symlinks=False)
    vol = os.path.join(work, 'vol.img')
    make_fs(vol, size, tree, '6f2b1c1e-0000-4000-8000-0000000c0001')
    run('cp', '--sparse=never', vol, vol + '.dense')  # free space as real zeros, like a block device
    os.replace(vol + '.dense', vol)
    shutil.copyfile(vol, os.path.join(work, 'vol-inc.img'))
    changed = rewrite_blocks(os.path.join(work, 'vol-inc.img'), 0.02)
    sparse = os.path.join(work, 'sparse.img')
    make_fs(sparse, size * 4, tree, '6f2b1c1e-0000-4000-8000-0000000c0002')
    shutil.rmtree(tree)
    with open(stamp, 'w') as f:
        f.write(f'{used} bytes of files, {changed} blocks changed\n')
    print(f'volumes: {used / MiB:.0f} MiB of files in {size_mib} MiB, {changed} 4 KiB blocks rewritten', file=sys.stderr)


if __name__ == '__main__':
    main(sys.argv[1], int(sys.argv[2]))
