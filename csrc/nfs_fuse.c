/*
 * xapi-nfs-mount: mounts an NFS export where the kernel has no NFS client, as a FUSE file system
 * (libfuse3's high-level API) whose every operation is a libnfs call.  libnfs speaks the protocol,
 * FUSE makes the file system; this file only maps one onto the other.
 *
 *   xapi-nfs-mount SERVER:/PATH MOUNTPOINT [-o OPTIONS] [-f]
 *
 * The arguments are mount.nfs's, so a storage driver runs it exactly as it runs mount.nfs.  Options
 * used: vers=3|4|4.x (NFSv3 by default), proto=tcp|tcp6 (libnfs has no UDP transport: refused),
 * soft|hard, timeo (tenths of a second, default 600) and retrans (default 2): the mount, and on a soft
 * mount every call, fails after timeo * (retrans + 1); actimeo or acdirmax (seconds the kernel may
 * cache attributes, default 0).
 * Other mount.nfs options (nconnect, rsize, ...) tune the kernel client and are ignored.
 *
 * The export is mounted before anything else: a server that does not answer, or an export it does not
 * have, ends the program with status 32 (mount.nfs's "mount failure") and libnfs's words on stderr.
 * Then the file system is mounted and the program daemonizes (-f: stays in the foreground), so when
 * it returns the mount is there.  umount or fusermount3 -u ends it.  It serves one request at a time:
 * libnfs 4.0's synchronous calls share one context.
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <unistd.h>

#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw.h>
#include <nfsc/libnfs-raw-nfs.h>     /* NFS_V3 */
#include <nfsc/libnfs-raw-nfs4.h>    /* NFS_V4 */

#define UNKNOWN_INO 0xffffffff  /* libfuse's "no inode number" (FUSE_UNKNOWN_INO, not exported) */
#define MOUNT_FAILURE 32       /* mount.nfs's exit status for a failed mount */
#define USAGE 1

static struct nfs_context *nfs;
static double cache_seconds;   /* attribute and entry timeout given to the kernel */
static int v4;                 /* NFSv4: libnfs 4.0's WRITE and CREATE need the help below */
/* libnfs 4.0 encodes an NFSv4 COMPOUND in a 4 KiB buffer: a WRITE of more than about 3.8 KiB fails
   ("Failed to encode COMPOUND4args"), so NFSv4 writes go in pieces that fit with a largest handle */
#define V4_WRITE_PIECE 3072

#define FH(fi) ((struct nfsfh *)(uintptr_t)(fi)->fh)

static void to_stat(const struct nfs_stat_64 *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_dev = n->nfs_dev;
	st->st_ino = n->nfs_ino;
	st->st_mode = n->nfs_mode;
	st->st_nlink = n->nfs_nlink;
	st->st_uid = n->nfs_uid;
	st->st_gid = n->nfs_gid;
	st->st_rdev = n->nfs_rdev;
	st->st_size = n->nfs_size;
	st->st_blksize = n->nfs_blksize;
	st->st_blocks = n->nfs_blocks;
	st->st_atim.tv_sec = n->nfs_atime;
	st->st_atim.tv_nsec = n->nfs_atime_nsec;
	st->st_mtim.tv_sec = n->nfs_mtime;
	st->st_mtim.tv_nsec = n->nfs_mtime_nsec;
	st->st_ctim.tv_sec = n->nfs_ctime;
	st->st_ctim.tv_nsec = n->nfs_ctime_nsec;
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct nfs_stat_64 n;
	int r = fi ? nfs_fstat64(nfs, FH(fi), &n) : nfs_lstat64(nfs, path, &n);
	if (r == 0)
		to_stat(&n, st);
	return r;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t offset,
		      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	struct nfsdir *dir;
	struct nfsdirent *e;
	int r = nfs_opendir(nfs, path, &dir);
	(void)offset; (void)fi; (void)flags;
	if (r < 0)
		return r;
	/* NFSv4 lists neither "." nor "..", and leaves the entries' inode numbers out (0: an entry
	   readdir(3) skips; UNKNOWN_INO lets the kernel do without) */
	fill(buf, ".", NULL, 0, 0);
	fill(buf, "..", NULL, 0, 0);
	while ((e = nfs_readdir(nfs, dir)) != NULL) {
		struct stat st = { .st_ino = e->inode ? e->inode : UNKNOWN_INO, .st_mode = e->mode };
		if (!strcmp(e->name, ".") || !strcmp(e->name, ".."))
			continue;
		if (fill(buf, e->name, &st, 0, 0))
			break;
	}
	nfs_closedir(nfs, dir);
	return 0;
}

static int op_mkdir(const char *path, mode_t mode) { return nfs_mkdir2(nfs, path, mode); }
static int op_rmdir(const char *path) { return nfs_rmdir(nfs, path); }
static int op_unlink(const char *path) { return nfs_unlink(nfs, path); }
static int op_symlink(const char *target, const char *path) { return nfs_symlink(nfs, target, path); }
static int op_link(const char *from, const char *to) { return nfs_link(nfs, from, to); }
static int op_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	return fi ? nfs_fchmod(nfs, FH(fi), mode) : nfs_chmod(nfs, path, mode);
}

static int op_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
	struct nfs_stat_64 n;
	int r;
	if (uid == (uid_t)-1 || gid == (gid_t)-1) {    /* -1 keeps the current owner or group */
		r = fi ? nfs_fstat64(nfs, FH(fi), &n) : nfs_lstat64(nfs, path, &n);
		if (r < 0)
			return r;
		if (uid == (uid_t)-1)
			uid = n.nfs_uid;
		if (gid == (gid_t)-1)
			gid = n.nfs_gid;
	}
	return fi ? nfs_fchown(nfs, FH(fi), uid, gid) : nfs_lchown(nfs, path, uid, gid);
}

static int op_rename(const char *from, const char *to, unsigned int flags)
{
	if (flags)                   /* RENAME_NOREPLACE, RENAME_EXCHANGE: NFS has neither */
		return -EINVAL;
	return nfs_rename(nfs, from, to);
}

static int op_readlink(const char *path, char *buf, size_t size)
{
	int r = nfs_readlink(nfs, path, buf, size > INT_MAX ? INT_MAX : (int)size);
	if (r < 0)
		return r;
	buf[size - 1] = '\0';
	return 0;
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	return fi ? nfs_ftruncate(nfs, FH(fi), size) : nfs_truncate(nfs, path, size);
}

/* libnfs opens with the access mode and these; O_CREAT and O_EXCL come through create */
#define OPEN_FLAGS (O_ACCMODE | O_TRUNC | O_APPEND | O_SYNC)

static int op_open(const char *path, struct fuse_file_info *fi)
{
	struct nfsfh *fh;
	int r = nfs_open(nfs, path, fi->flags & OPEN_FLAGS, &fh);
	if (r == 0)
		fi->fh = (uintptr_t)fh;
	return r;
}

static int op_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct nfsfh *fh;
	int r = nfs_create(nfs, path, fi->flags & (OPEN_FLAGS | O_EXCL), mode, &fh);
	if (r < 0)
		return r;
	fi->fh = (uintptr_t)fh;
	if (v4)                      /* libnfs 4.0's NFSv4 OPEN makes the file 0600 whatever the mode */
		nfs_fchmod(nfs, fh, mode & 07777);
	return 0;
}

static int op_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)path;
	return nfs_pread(nfs, FH(fi), off, size, buf);
}

static int op_write(const char *path, const char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	size_t done = 0;
	(void)path;
	while (done < size) {
		size_t n = size - done;
		int r;
		if (v4 && n > V4_WRITE_PIECE)
			n = V4_WRITE_PIECE;
		r = nfs_pwrite(nfs, FH(fi), off + done, n, buf + done);
		if (r <= 0)
			return done ? (int)done : (r < 0 ? r : -EIO);
		done += r;
	}
	return done;
}

static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path; (void)datasync;
	return nfs_fsync(nfs, FH(fi));
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	return nfs_close(nfs, FH(fi));
}

static int op_statfs(const char *path, struct statvfs *out)
{
	struct nfs_statvfs_64 s;
	int r = nfs_statvfs64(nfs, path, &s);
	if (r < 0)
		return r;
	memset(out, 0, sizeof(*out));
	out->f_bsize = s.f_bsize;
	out->f_frsize = s.f_frsize;
	out->f_blocks = s.f_blocks;
	out->f_bfree = s.f_bfree;
	out->f_bavail = s.f_bavail;
	out->f_files = s.f_files;
	out->f_ffree = s.f_ffree;
	out->f_favail = s.f_favail;
	out->f_namemax = s.f_namemax;
	return 0;
}

static int op_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
	struct timeval t[2], now;
	struct nfs_stat_64 n = { 0 };
	int i, r;
	(void)fi;
	gettimeofday(&now, NULL);
	if (tv[0].tv_nsec == UTIME_OMIT || tv[1].tv_nsec == UTIME_OMIT) {
		if ((r = nfs_lstat64(nfs, path, &n)) < 0)
			return r;
	}
	for (i = 0; i < 2; i++) {
		if (tv[i].tv_nsec == UTIME_NOW) {
			t[i] = now;
		} else if (tv[i].tv_nsec == UTIME_OMIT) {
			t[i].tv_sec = i ? n.nfs_mtime : n.nfs_atime;
			t[i].tv_usec = (i ? n.nfs_mtime_nsec : n.nfs_atime_nsec) / 1000;
		} else {
			t[i].tv_sec = tv[i].tv_sec;
			t[i].tv_usec = tv[i].tv_nsec / 1000;
		}
	}
	return nfs_utimes(nfs, path, t);
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	(void)conn;
	cfg->use_ino = 1;             /* the server's inode numbers: hard links look like one file */
	cfg->hard_remove = 1;         /* unlink removes at once, no .fuse_hidden files left in the SR */
	cfg->attr_timeout = cache_seconds;
	cfg->entry_timeout = cache_seconds;
	cfg->negative_timeout = 0;
	return NULL;
}

static const struct fuse_operations ops = {
	.init = op_init,
	.getattr = op_getattr,
	.readdir = op_readdir,
	.mkdir = op_mkdir,
	.rmdir = op_rmdir,
	.unlink = op_unlink,
	.symlink = op_symlink,
	.readlink = op_readlink,
	.link = op_link,
	.rename = op_rename,
	.chmod = op_chmod,
	.chown = op_chown,
	.truncate = op_truncate,
	.open = op_open,
	.create = op_create,
	.read = op_read,
	.write = op_write,
	.fsync = op_fsync,
	.release = op_release,
	.statfs = op_statfs,
	.utimens = op_utimens,
};

struct options {
	int version;                  /* NFS_V3 or NFS_V4 */
	int soft;
	long timeo;                   /* tenths of a second */
	long retrans;
};

/* mount.nfs's -o list; returns 0, or prints why and returns -1 */
static int parse_options(char *list, struct options *o)
{
	char *save = NULL, *opt;
	for (opt = strtok_r(list, ",", &save); opt; opt = strtok_r(NULL, ",", &save)) {
		char *value = strchr(opt, '=');
		if (value)
			*value++ = '\0';
		if (!strcmp(opt, "vers") || !strcmp(opt, "nfsvers")) {
			if (value && !strcmp(value, "3"))
				o->version = NFS_V3;
			else if (value && (!strcmp(value, "4") || !strncmp(value, "4.", 2)))
				o->version = NFS_V4;
			else {
				fprintf(stderr, "xapi-nfs-mount: NFS version %s is not supported\n", value ? value : "");
				return -1;
			}
		} else if (!strcmp(opt, "proto")) {
			if (!value || (strcmp(value, "tcp") && strcmp(value, "tcp6"))) {
				fprintf(stderr, "xapi-nfs-mount: proto=%s: only TCP is supported\n", value ? value : "");
				return -1;
			}
		} else if (!strcmp(opt, "udp")) {
			fprintf(stderr, "xapi-nfs-mount: udp: only TCP is supported\n");
			return -1;
		} else if (!strcmp(opt, "soft")) {
			o->soft = 1;
		} else if (!strcmp(opt, "hard")) {
			o->soft = 0;
		} else if (!strcmp(opt, "timeo") && value) {
			o->timeo = strtol(value, NULL, 10);
		} else if (!strcmp(opt, "retrans") && value) {
			o->retrans = strtol(value, NULL, 10);
		} else if ((!strcmp(opt, "actimeo") || !strcmp(opt, "acdirmax")) && value) {
			cache_seconds = strtod(value, NULL);
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct options o = { .version = NFS_V3, .soft = 0, .timeo = 600, .retrans = 2 };
	const char *remote = NULL, *mountpoint = NULL;
	char *optlist = NULL, *server, *export, *colon, fsname[PATH_MAX + 300];
	int foreground = 0, i, r;
	struct fuse *f;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-o") && i + 1 < argc)
			optlist = argv[++i];
		else if (!strcmp(argv[i], "-f"))
			foreground = 1;
		else if (!remote)
			remote = argv[i];
		else if (!mountpoint)
			mountpoint = argv[i];
		else
			mountpoint = NULL, i = argc;
	}
	if (!remote || !mountpoint || !(colon = strrchr(remote, ':')) || colon[1] != '/') {
		fprintf(stderr, "usage: xapi-nfs-mount SERVER:/PATH MOUNTPOINT [-o OPTIONS] [-f]\n");
		return USAGE;
	}
	server = strndup(remote, colon - remote);
	export = colon + 1;
	if (server[0] == '[' && server[strlen(server) - 1] == ']') {   /* [IPv6] */
		memmove(server, server + 1, strlen(server));
		server[strlen(server) - 1] = '\0';
	}
	if (optlist && parse_options(strdup(optlist), &o) < 0)
		return MOUNT_FAILURE;

	nfs = nfs_init_context();
	if (!nfs) {
		fprintf(stderr, "xapi-nfs-mount: cannot make an NFS context\n");
		return MOUNT_FAILURE;
	}
	nfs_set_version(nfs, o.version);
	v4 = o.version == NFS_V4;
	/* a call gives up after its tries (libnfs counts whole seconds): the mount's always, as
	   mount.nfs's in the foreground does; the file system's on a soft mount only */
	long ms = o.timeo * 100 * (o.retrans + 1);
	nfs_set_timeout(nfs, (int)((ms + 999) / 1000 * 1000));
	nfs_set_autoreconnect(nfs, o.soft ? (int)o.retrans : -1);
	r = nfs_mount(nfs, server, export);
	if (r < 0) {
		fprintf(stderr, "xapi-nfs-mount: mounting %s failed: %s\n", remote, nfs_get_error(nfs));
		return MOUNT_FAILURE;
	}
	if (!o.soft)
		nfs_set_timeout(nfs, -1);

	snprintf(fsname, sizeof(fsname), "-ofsname=%s,subtype=nfs,allow_other", remote);
	char *fargv[] = { argv[0], fsname, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(2, fargv);
	f = fuse_new(&args, &ops, sizeof(ops), NULL);
	if (!f) {
		fprintf(stderr, "xapi-nfs-mount: fuse_new failed\n");
		return MOUNT_FAILURE;
	}
	if (fuse_mount(f, mountpoint) != 0) {
		fprintf(stderr, "xapi-nfs-mount: cannot mount a FUSE file system on %s\n", mountpoint);
		fuse_destroy(f);
		return MOUNT_FAILURE;
	}
	if (fuse_daemonize(foreground) != 0 || fuse_set_signal_handlers(fuse_get_session(f)) != 0) {
		fuse_unmount(f);
		fuse_destroy(f);
		return MOUNT_FAILURE;
	}
	r = fuse_loop(f);
	fuse_remove_signal_handlers(fuse_get_session(f));
	fuse_unmount(f);
	fuse_destroy(f);
	nfs_umount(nfs);
	nfs_destroy_context(nfs);
	return r ? 1 : 0;
}
