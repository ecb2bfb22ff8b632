/*
 * main.c: the ckptd command: `serve` (the daemon), `verify`, `gc`, `stats`,
 * `--help`, `--version`. Flags, environment defaults, the data directory's
 * lock, and signals: SIGINT/SIGTERM stop accepting connections, let requests
 * in flight finish, then exit 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../api/api.h"
#include "../common/err.h"
#include "http.h"
#include "log.h"

#ifndef CKPTD_VERSION
#define CKPTD_VERSION "dev"
#endif

/* getopt codes of long options without a letter */
enum {
	OPT_TO_INDEX = 1000,
	OPT_TO_BLOBS,
	OPT_TO_S3_ENDPOINT,
	OPT_TO_S3_REGION,
	OPT_RESUME_GRACE,
	OPT_STAGE_TIMEOUT,
};

static const char usage[] =
    "usage: ckptd <command> [options]\n"
    "\n"
    "commands:\n"
    "  serve     run the HTTP daemon\n"
    "  verify    re-hash every stored blob and report damaged or missing ones\n"
    "  gc        apply retention policies and remove unreferenced blobs (on a\n"
    "            SQLite index it refuses while a daemon serves it; on PostgreSQL\n"
    "            it runs beside the instances)\n"
    "  stats     print the store's sizes and ratios as JSON\n"
    "  migrate   copy the store into other backends (--to-index, --to-blobs),\n"
    "            keeping ids; run it again to resume; verifies the copy\n"
    "\n"
    "options:\n"
    "  --data DIR               this instance's directory: upload spools, and by\n"
    "                           default the index and the blobs (default\n"
    "                           ./ckptd-data; env CKPTD_DATA)\n"
    "  --index URL              the index: sqlite:PATH (default DATA/index.sqlite) or\n"
    "                           postgresql://USER@HOST:PORT/DB, shared by several\n"
    "                           instances (env CKPTD_INDEX)\n"
    "  --blobs DIR|s3://BUCKET/PREFIX\n"
    "                           the blob store: a directory (default DATA/blobs) or an\n"
    "                           S3-compatible bucket, shared by several instances (env\n"
    "                           CKPTD_BLOBS); S3 credentials come from AWS_ACCESS_KEY_ID,\n"
    "                           AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN only\n"
    "  --s3-endpoint URL        the S3 service, http(s)://HOST[:PORT] (default AWS;\n"
    "                           env CKPTD_S3_ENDPOINT)\n"
    "  --s3-region NAME         the region requests are signed for (default us-east-1;\n"
    "                           env CKPTD_S3_REGION)\n"
    "  --to-index URL           migrate: the target index (sqlite:PATH, postgresql://)\n"
    "  --to-blobs DIR|s3://BUCKET/PREFIX\n"
    "                           migrate: the target blob store\n"
    "  --to-s3-endpoint URL     migrate: the target's S3 endpoint (default: the one\n"
    "                           of --s3-endpoint)\n"
    "  --to-s3-region NAME      migrate: the target's S3 region (default: the one of\n"
    "                           --s3-region)\n"
    "  --claim-lease SECONDS    how long an upload's or download's claim on its blobs\n"
    "                           lives without renewal; leftovers of a crashed\n"
    "                           instance go after it (default 3600)\n"
    "  --resume-grace SECONDS   how long the tensors of an upload that broke off\n"
    "                           stay for its retry, which then sends only the rest\n"
    "                           (default 3600; 0 = not kept)\n"
    "  --stage-timeout SECONDS  how long a staged checkpoint of several files may\n"
    "                           wait for its commit before it is removed\n"
    "                           (default 86400)\n"
    "  --listen HOST:PORT       address to serve on (default 127.0.0.1:8080;\n"
    "                           env CKPTD_LISTEN)\n"
    "  --token-file FILE        lines of 'TOKEN SCOPE' (read, write, admin); writes\n"
    "                           then need 'Authorization: Bearer TOKEN'\n"
    "  --auth-read              reads need a token too\n"
    "  --max-upload-size BYTES  largest upload accepted (suffixes K, M, G; default 0,\n"
    "                           no limit)\n"
    "  --threads N              HTTP worker threads (default 2 x CPUs, at least 4),\n"
    "                           and as many more, started as needed, that finish\n"
    "                           uploads (store, commit) off the connections' threads\n"
    "  --compress auto|off      store blobs with the codec when it pays, and in a blob\n"
    "                           directory a float tensor as its difference from the\n"
    "                           run's previous checkpoint's when smaller (default auto)\n"
    "  --max-connections N      connections at once (default 1024); more are closed\n"
    "                           at accept. serve raises its open-file limit to the\n"
    "                           hard limit: each upload holds a socket and a spool\n"
    "  --max-connections-per-ip N\n"
    "                           connections at once from one client address\n"
    "                           (default 64; 0 = no limit). Behind a reverse proxy\n"
    "                           every client has the proxy's address: raise it\n"
    "  --header-timeout SECONDS time a connection has to send a whole request line\n"
    "                           and headers, from its accept or from the end of its\n"
    "                           previous request (default 15; so also how long an\n"
    "                           idle keep-alive connection stays open)\n"
    "  --idle-timeout SECONDS   a request body or a response that moves no byte for\n"
    "                           this long is cut off (default 60)\n"
    "  -h, --help               this text\n"
    "  -V, --version            the version\n"
    "\n"
    "limits of serve without a flag:\n"
    "  a query string holds at most 512 arguments (with a form's fields); more\n"
    "  answer 431, none is dropped. A request line and headers must fit in 128 KiB\n"
    "  (else 414 or 431). A Transfer-Encoding other than chunked answers 501. A body\n"
    "  the client ends before its Content-Length answers 400. On SIGINT/SIGTERM,\n"
    "  requests being handled or answered get 60 s to finish; uploads whose client\n"
    "  has sent nothing for 2 s are dropped. Uploads are hashed by one thread per\n"
    "  CPU (2 to 16) shared by all uploads, not by threads of their own.\n";

static int parse_size(uint64_t *out, const char *s)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	uint64_t mul = 1;

	if (end == s || errno || s[0] == '-')
		return -1;
	switch (*end) {
	case 'k':
	case 'K':
		mul = 1ull << 10;
		end++;
		break;
	case 'm':
	case 'M':
		mul = 1ull << 20;
		end++;
		break;
	case 'g':
	case 'G':
		mul = 1ull << 30;
		end++;
		break;
	case 't':
	case 'T':
		mul = 1ull << 40;
		end++;
		break;
	}
	if ((*end == 'b' || *end == 'B') && mul > 1)
		end++;
	if (*end || (v && mul > UINT64_MAX / v))
		return -1;
	*out = v * mul;
	return 0;
}

/* Holds an exclusive flock on DIR/LOCK for the process's lifetime. */
static int lock_data_dir(const char *dir)
{
	char path[4096];
	int fd;

	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "ckptd: cannot create %s: %s\n", dir, strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/LOCK", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "ckptd: cannot open %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		fprintf(stderr,
			"ckptd: another ckptd process is using %s (it holds %s); stop it "
			"first\n",
			dir, path);
		close(fd);
		return -1;
	}
	return fd;
}

/* 1 when url names an index several processes share (not SQLite). */
static int shared_index(const char *url)
{
	return url && strncmp(url, "sqlite:", 7);
}

/* A whole decimal number in [min, max] for flag; prints why not. */
static int parse_count(unsigned *out, const char *flag, const char *s, unsigned min, unsigned max)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);

	if (end == s || *end || errno || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "ckptd: %s must be a whole number from %u to %u\n", flag, min, max);
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

/* Raises the open-file limit to the hard limit (each connection is a
 * socket, each upload also a spool file) and says when it stays low. */
static void raise_nofile(unsigned max_conns)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 2 * (rlim_t)max_conns + 64)
		log_msg("the open-file limit (%llu) is low for --max-connections %u: uploads may "
			"fail to open their spool (raise it with ulimit -n)",
			(unsigned long long)rl.rlim_cur, max_conns);
}

static int serve(struct app_config *cfg, struct http_options *o)
{
	struct app *app = NULL;
	struct http_server *srv = NULL;
	sigset_t set;
	int sig = 0, lock, err;

	/* Downloads open a blob reader per storage, each with ~1-3 MiB of
	 * codec buffers; keep such blocks in the heap instead of mapping and
	 * unmapping (and faulting in) fresh pages for every blob. */
	mallopt(M_MMAP_THRESHOLD, 16 << 20);
	mallopt(M_TRIM_THRESHOLD, 64 << 20);
	raise_nofile(o->max_conns);
	if ((lock = lock_data_dir(cfg->data_dir)) < 0)
		return 1;
	cfg->clean = 1;
	if ((err = app_open(&app, cfg)) < 0) {
		fprintf(stderr, "ckptd: %s\n", ck_errmsg());
		close(lock);
		return 1;
	}
	/* Block the stop signals in every thread; the main thread waits for
	 * them. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	o->app = app;
	if ((err = http_start(&srv, o)) < 0) {
		fprintf(stderr, "ckptd: %s\n", ck_errmsg());
		app_close(app);
		close(lock);
		return 1;
	}
	log_msg("ckptd %s serving http://%s/ from %s (index %s, blobs %s; %u threads, compression "
		"%s%s)",
		CKPTD_VERSION, o->listen, cfg->data_dir, app_index_kind(app), app_blobs_kind(app),
		o->threads, cfg->compress ? "auto" : "off", cfg->token_file ? ", tokens on" : "");
	sigwait(&set, &sig);
	log_msg("received %s: finishing requests in flight", sig == SIGINT ? "SIGINT" : "SIGTERM");
	http_stop(srv, 60);
	app_close(app);
	close(lock);
	log_msg("stopped");
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"data", required_argument, NULL, 'd'},
	    {"index", required_argument, NULL, 'i'},
	    {"blobs", required_argument, NULL, 'b'},
	    {"s3-endpoint", required_argument, NULL, 'E'},
	    {"to-index", required_argument, NULL, OPT_TO_INDEX},
	    {"to-blobs", required_argument, NULL, OPT_TO_BLOBS},
	    {"to-s3-endpoint", required_argument, NULL, OPT_TO_S3_ENDPOINT},
	    {"to-s3-region", required_argument, NULL, OPT_TO_S3_REGION},
	    {"s3-region", required_argument, NULL, 'R'},
	    {"claim-lease", required_argument, NULL, 'L'},
	    {"resume-grace", required_argument, NULL, OPT_RESUME_GRACE},
	    {"stage-timeout", required_argument, NULL, OPT_STAGE_TIMEOUT},
	    {"listen", required_argument, NULL, 'l'},
	    {"token-file", required_argument, NULL, 't'},
	    {"auth-read", no_argument, NULL, 'r'},
	    {"max-upload-size", required_argument, NULL, 'm'},
	    {"threads", required_argument, NULL, 'n'},
	    {"compress", required_argument, NULL, 'c'},
	    {"max-connections", required_argument, NULL, 'C'},
	    {"max-connections-per-ip", required_argument, NULL, 'P'},
	    {"header-timeout", required_argument, NULL, 'H'},
	    {"idle-timeout", required_argument, NULL, 'I'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	struct app_config cfg = {0}, to = {0};
	const char *listen = getenv("CKPTD_LISTEN"), *cmd = NULL;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	struct http_options http = {
	    .threads = ncpu > 2 ? (unsigned)(2 * ncpu) : 4,
	    .max_conns = 1024,
	    .max_conns_per_ip = 64,
	    .header_timeout = 15,
	    .idle_timeout = 60,
	};
	int c;

	cfg.data_dir = getenv("CKPTD_DATA");
	cfg.index_url = getenv("CKPTD_INDEX");
	cfg.blobs_url = getenv("CKPTD_BLOBS");
	cfg.s3_endpoint = getenv("CKPTD_S3_ENDPOINT");
	cfg.s3_region = getenv("CKPTD_S3_REGION");
	if (cfg.index_url && !*cfg.index_url)
		cfg.index_url = NULL;
	if (cfg.blobs_url && !*cfg.blobs_url)
		cfg.blobs_url = NULL;
	if (cfg.s3_endpoint && !*cfg.s3_endpoint)
		cfg.s3_endpoint = NULL;
	if (cfg.s3_region && !*cfg.s3_region)
		cfg.s3_region = NULL;
	cfg.compress = 1;
	cfg.resume_grace = 3600;
	cfg.stage_timeout = 86400;
	if (!cfg.data_dir || !*cfg.data_dir)
		cfg.data_dir = "./ckptd-data";
	if (!listen || !*listen)
		listen = "127.0.0.1:8080";
	while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
		switch (c) {
		case 'd': cfg.data_dir = optarg; break;
		case 'i': cfg.index_url = optarg; break;
		case 'E': cfg.s3_endpoint = optarg; break;
		case OPT_TO_INDEX: to.index_url = optarg; break;
		case OPT_TO_BLOBS: to.blobs_url = optarg; break;
		case OPT_TO_S3_ENDPOINT: to.s3_endpoint = optarg; break;
		case OPT_TO_S3_REGION: to.s3_region = optarg; break;
		case 'R': cfg.s3_region = optarg; break;
		case 'b': cfg.blobs_url = optarg; break;
		case 'L': {
			char *end;
			long long v = strtoll(optarg, &end, 10);
			if (*end || v < 1 || v > 7 * 86400) {
				fprintf(stderr,
					"ckptd: --claim-lease takes seconds, 1 to 604800\n");
				return 2;
			}
			cfg.lease = v;
			break;
		}
		case OPT_RESUME_GRACE: {
			char *end;
			long long v = strtoll(optarg, &end, 10);
			if (!*optarg || *end || v < 0 || v > 7 * 86400) {
				fprintf(stderr,
					"ckptd: --resume-grace takes seconds, 0 to 604800\n");
				return 2;
			}
			cfg.resume_grace = v;
			break;
		}
		case OPT_STAGE_TIMEOUT: {
			char *end;
			long long v = strtoll(optarg, &end, 10);
			if (!*optarg || *end || v < 1 || v > 30 * 86400) {
				fprintf(stderr,
					"ckptd: --stage-timeout takes seconds, 1 to 2592000\n");
				return 2;
			}
			cfg.stage_timeout = v;
			break;
		}
		case 'l': listen = optarg; break;
		case 't': cfg.token_file = optarg; break;
		case 'r': cfg.auth_read = 1; break;
		case 'm':
			if (parse_size(&cfg.max_upload, optarg) < 0) {
				fprintf(stderr,
					"ckptd: --max-upload-size '%s' is not a size like "
					"512M\n",
					optarg);
				return 2;
			}
			break;
		case 'n': {
			char *end;
			long v = strtol(optarg, &end, 10);
			if (*end || v < 1 || v > 1024) {
				fprintf(stderr, "ckptd: --threads must be 1 to 1024\n");
				return 2;
			}
			http.threads = (unsigned)v;
			break;
		}
		case 'C':
			if (parse_count(&http.max_conns, "--max-connections", optarg, 1, 1000000) <
			    0)
				return 2;
			break;
		case 'P':
			if (parse_count(&http.max_conns_per_ip, "--max-connections-per-ip", optarg,
					0, 1000000) < 0)
				return 2;
			break;
		case 'H':
			if (parse_count(&http.header_timeout, "--header-timeout", optarg, 1, 3600) <
			    0)
				return 2;
			break;
		case 'I':
			if (parse_count(&http.idle_timeout, "--idle-timeout", optarg, 1, 86400) < 0)
				return 2;
			break;
		case 'c':
			if (!strcmp(optarg, "auto"))
				cfg.compress = 1;
			else if (!strcmp(optarg, "off"))
				cfg.compress = 0;
			else {
				fprintf(stderr, "ckptd: --compress takes auto or off\n");
				return 2;
			}
			break;
		case 'h': fputs(usage, stdout); return 0;
		case 'V': printf("ckptd %s\n", CKPTD_VERSION); return 0;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (optind < argc)
		cmd = argv[optind++];
	if (!cmd) {
		fputs(usage, stderr);
		return 2;
	}
	if (optind < argc) {
		fprintf(stderr, "ckptd: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	http.listen = listen;
	if (!strcmp(cmd, "serve"))
		return serve(&cfg, &http);
	if (!strcmp(cmd, "migrate") && (!to.index_url || !to.blobs_url)) {
		fprintf(stderr,
			"ckptd: migrate needs --to-index URL and --to-blobs DIR|s3://...\n");
		return 2;
	}
	if (!strcmp(cmd, "verify") || !strcmp(cmd, "stats") || !strcmp(cmd, "gc") ||
	    !strcmp(cmd, "migrate")) {
		struct app *app = NULL;
		int lock = -1, rc = 0, err;
		struct stat st;
		if (stat(cfg.data_dir, &st) < 0) {
			fprintf(stderr, "ckptd: no data directory at %s\n", cfg.data_dir);
			return 1;
		}
		/* gc on a store only one process may use (a SQLite index)
		 * waits for no daemon: it refuses while one serves. On a
		 * shared index the claims protect what instances hold. */
		if (!strcmp(cmd, "gc") && !shared_index(cfg.index_url)) {
			if ((lock = lock_data_dir(cfg.data_dir)) < 0)
				return 1;
			cfg.clean = 1;
		}
		cfg.token_file = NULL;
		if ((err = app_open(&app, &cfg)) < 0) {
			fprintf(stderr, "ckptd: %s\n", ck_errmsg());
			return 1;
		}
		if (!strcmp(cmd, "verify")) {
			err = app_verify(app, isatty(2));
			rc = err != 0;
		} else if (!strcmp(cmd, "migrate")) {
			to.data_dir = cfg.data_dir;
			to.compress = cfg.compress;
			to.lease = cfg.lease;
			if (!to.s3_endpoint)
				to.s3_endpoint = cfg.s3_endpoint;
			if (!to.s3_region)
				to.s3_region = cfg.s3_region;
			err = app_migrate(app, &to, isatty(2));
		} else if (!strcmp(cmd, "gc")) {
			uint64_t removed = 0;
			err = app_gc(app, &removed);
			if (err >= 0)
				printf("gc: removed %llu unreferenced blobs\n",
				       (unsigned long long)removed);
		} else {
			char *text = NULL;
			if ((err = app_stats_text(&text, app)) >= 0)
				printf("%s\n", text);
			free(text);
		}
		if (err < 0) {
			fprintf(stderr, "ckptd: %s\n", ck_errmsg());
			rc = 1;
		}
		app_close(app);
		if (lock >= 0)
			close(lock);
		return rc;
	}
	fprintf(stderr, "ckptd: unknown command '%s'\n\n%s", cmd, usage);
	return 2;
}
