# ckptd build. `make` builds build/ckptd; `make run` serves; `make test` runs
# every test. `make deps-run` installs what building and serving need from
# Debian's packages, `make deps` that and every test tool (tools/deps.sh).
# `make install` (PREFIX, DESTDIR) installs the binary, the man page and a
# systemd unit; `make container-test` builds and runs docker/.

CC ?= cc
BUILD := build
PKGS := libmicrohttpd jansson sqlite3 libpq libzstd zlib libdeflate libcrypto libcurl
CFLAGS ?= -O2 -g
FUZZ_SECONDS ?= 60
WARN := -Wall -Wextra -Werror -Wno-unused-parameter
CPPFLAGS += -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64
ALL_CFLAGS = -std=c11 $(WARN) $(CFLAGS) $(CPPFLAGS) -MMD -MP
LDLIBS_ALL = $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lmicrohttpd -ljansson -lsqlite3 -lpq -lzstd -lz -ldeflate -lcrypto -lcurl) -lpthread -lm
CPPFLAGS += $(shell pkg-config --cflags-only-I $(PKGS) 2>/dev/null || echo -I/usr/include/postgresql)
CHECK_LIBS = $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm)

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.1.0)
CPPFLAGS += -DCKPTD_VERSION='"$(VERSION)"'

LIB_SRCS := $(wildcard common/*.c formats/*.c storage/*.c api/*.c) \
	    $(filter-out server/main.c,$(wildcard server/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
WEB_FILES := $(sort $(wildcard web/*))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all run test unit unit-asan unit-s3 integration client-test e2e deps deps-run format \
	format-check fuzz bench sanitize clean install uninstall install-test container-test

all: $(BUILD)/ckptd

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

# The byte-plane loops of the codec vectorize at -O3 (a compressed 1 GB
# download here: ~1.4 s at -O2, ~1.0 s at -O3).
$(BUILD)/obj/storage/codec.o: CFLAGS += -O3

# The dashboard's files, compiled into the binary (api/dashboard.c).
$(BUILD)/gen/web_assets.c: $(WEB_FILES) tools/embed.sh
	@mkdir -p $(dir $@)
	sh tools/embed.sh $(WEB_FILES) > $@

$(BUILD)/obj/gen/web_assets.o: $(BUILD)/gen/web_assets.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

# The OpenAPI document, served at /api/v1/openapi.json (api/openapi.c).
$(BUILD)/gen/openapi.c: api/openapi.json tools/embed.sh
	@mkdir -p $(dir $@)
	sh tools/embed.sh -s openapi_assets api/openapi.json > $@

$(BUILD)/obj/gen/openapi.o: $(BUILD)/gen/openapi.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/libckptd.a: $(LIB_OBJS) $(BUILD)/obj/gen/web_assets.o $(BUILD)/obj/gen/openapi.o
	rm -f $@
	ar rcs $@ $^

$(BUILD)/ckptd: $(BUILD)/obj/server/main.o $(BUILD)/libckptd.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libckptd.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libckptd.a $(CHECK_LIBS) $(LDLIBS_ALL)

deps:
	@sh tools/deps.sh test

deps-run:
	@sh tools/deps.sh run

run: deps-run all
	$(BUILD)/ckptd serve --listen 127.0.0.1:8080 --data ./ckptd-data

# The integration suite runs last: its "N passed, M failed" line closes the run.
test: deps
	$(MAKE) all
	$(MAKE) format-check
	$(MAKE) unit
	$(MAKE) unit-asan
	$(MAKE) unit-s3
	$(MAKE) fuzz FUZZ_SECONDS=$${FUZZ_SECONDS:-30}
	$(MAKE) e2e
	$(MAKE) client-test
	$(MAKE) sanitize
	$(MAKE) integration

unit: $(UNIT_BINS)
	@sh tests/unit/run.sh $(UNIT_BINS)

# The unit tests again, built with clang's AddressSanitizer, UBSan and
# LeakSanitizer (each suite in one process, CK_FORK=no, so leaks are found at
# its exit). The S3 suite needs its RGW: it runs in unit-s3.
ASAN_CFLAGS = -std=c11 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer $(CPPFLAGS)
ASAN_OBJS := $(LIB_SRCS:%.c=$(BUILD)/asan/obj/%.o) $(BUILD)/asan/obj/gen/web_assets.o \
	$(BUILD)/asan/obj/gen/openapi.o
ASAN_UNIT_BINS := $(filter-out %/test_blob_s3,$(UNIT_SRCS:tests/unit/%.c=$(BUILD)/asan/tests/%))

$(BUILD)/asan/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(ASAN_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/asan/obj/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(dir $@)
	clang $(ASAN_CFLAGS) -c -o $@ $<

$(BUILD)/asan/libckptd.a: $(ASAN_OBJS)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/asan/tests/%: tests/unit/%.c $(BUILD)/asan/libckptd.a
	@mkdir -p $(dir $@)
	clang $(ASAN_CFLAGS) -o $@ $< $(BUILD)/asan/libckptd.a $(CHECK_LIBS) $(LDLIBS_ALL)

unit-asan: $(ASAN_UNIT_BINS)
	@CK_FORK=no ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
		sh tests/unit/run.sh $(ASAN_UNIT_BINS)

# The S3 blob store's unit test against a Ceph RGW that tests/services/rgw.sh
# starts for it (about 15 s) and stops afterwards; against the endpoint in
# CKPTD_TEST_S3_ENDPOINT instead when that is set (with CKPTD_TEST_S3_BUCKET
# and AWS_*). `make unit` runs the same test, which skips without an endpoint.
unit-s3: $(BUILD)/tests/test_blob_s3
	@if [ -n "$${CKPTD_TEST_S3_ENDPOINT:-}" ]; then \
		exec $(BUILD)/tests/test_blob_s3; fi; \
	env=$$(sh tests/services/rgw.sh start) || exit 1; eval "$$env"; \
	trap 'sh tests/services/rgw.sh stop "$$CKPTD_RGW_DIR"' EXIT; trap 'exit 130' INT TERM; \
	$(BUILD)/tests/test_blob_s3

# The whole suite once per store: SQLite + a directory; PostgreSQL + a directory;
# PostgreSQL + S3 (Ceph RGW), each service started by tests/services/ for the run.
integration: $(BUILD)/ckptd
	@CKPTD_IT_BACKENDS="$${CKPTD_IT_BACKENDS:-sqlite postgresql postgresql+s3}" sh tests/integration/run.sh

# The Python client's pytest suite (clients/python/tests) against build/ckptd:
# the API, retries, the command line, HTTPS through nginx, a pip install into
# a fresh venv, mypy --strict. CKPTD_SKIP_BIG=1 leaves out the 2 GiB save.
client-test: $(BUILD)/ckptd
	cd clients/python && CKPTD_BIN=$(CURDIR)/$(BUILD)/ckptd \
		timeout -k 10 1200 /usr/bin/python3 -m pytest -q tests

e2e: $(BUILD)/ckptd
	@if [ -f tests/e2e/run.sh ]; then sh tests/e2e/run.sh; fi

FMT_SRCS = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(FMT_SRCS)

format-check:
	@clang-format --dry-run --Werror $(FMT_SRCS) && echo "format: ok"

fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) sh tests/fuzz/run.sh

bench: all
	@sh bench/run.sh

# The daemon built with ASan + UBSan (LeakSanitizer on: daemons stopped with
# SIGTERM report leaks at exit), and the integration suite run against it on
# SQLite (without the 1 GB cases: about 3 minutes); each daemon's log is kept
# and searched for sanitizer reports.
$(BUILD)/asan/ckptd: $(BUILD)/asan/obj/server/main.o $(BUILD)/asan/libckptd.a
	@mkdir -p $(dir $@)
	clang $(ASAN_CFLAGS) -o $@ $^ $(LDLIBS_ALL)

sanitize: $(BUILD)/asan/ckptd
	@rm -rf $(BUILD)/asan/it && mkdir -p $(BUILD)/asan/it
	CKPTD_BIN=$(BUILD)/asan/ckptd CKPTD_SKIP_BIG=1 CKPTD_SOAK_SHORT=1 CKPTD_IT_KEEP=1 \
		TMPDIR=$(CURDIR)/$(BUILD)/asan/it \
		sh tests/integration/run.sh
	@if grep -rl "ERROR: AddressSanitizer\|runtime error:\|ERROR: LeakSanitizer" $(BUILD)/asan/it; then \
		echo "sanitize: reports above"; exit 1; else echo "sanitize: no sanitizer reports"; fi

# Installing: the binary, the man page, the systemd unit (dist/ckptd.service,
# with the binary's path filled in) and its environment file, which is kept
# when it exists (it is the administrator's). `systemctl daemon-reload &&
# systemctl enable --now ckptd` then serves on 127.0.0.1:8080 from
# /var/lib/ckptd. tests/integration/test_install.py checks all of it
# (`make install-test`).
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
INSTALLED = $(DESTDIR)$(BINDIR)/ckptd $(DESTDIR)$(MANDIR)/man1/ckptd.1 \
	$(DESTDIR)$(UNITDIR)/ckptd.service

install: $(BUILD)/ckptd
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(SYSCONFDIR)/default
	install -m 0755 $(BUILD)/ckptd $(DESTDIR)$(BINDIR)/ckptd
	install -m 0644 docs/ckptd.1 $(DESTDIR)$(MANDIR)/man1/ckptd.1
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' dist/ckptd.service \
		> $(DESTDIR)$(UNITDIR)/ckptd.service.tmp
	chmod 0644 $(DESTDIR)$(UNITDIR)/ckptd.service.tmp
	mv $(DESTDIR)$(UNITDIR)/ckptd.service.tmp $(DESTDIR)$(UNITDIR)/ckptd.service
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/default/ckptd ]; then \
		echo "install: keeping $(DESTDIR)$(SYSCONFDIR)/default/ckptd"; \
	else install -m 0644 dist/ckptd.default $(DESTDIR)$(SYSCONFDIR)/default/ckptd; fi

uninstall:
	rm -f $(INSTALLED)

install-test: $(BUILD)/ckptd
	@sh tests/integration/run.sh test_install

# The image (docker/Dockerfile) and the compose file, built and run with
# podman (or docker where its engine answers): health, an upload, a download,
# the non-root user, the data volume, compose up and down (docker/test.sh).
container-test:
	@sh tools/deps.sh container
	@sh docker/test.sh

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj $(BUILD)/asan/obj -name '*.d' 2>/dev/null)
