# greyspf: build and install for systems without a Debian package.
#
#   make build                      cargo build --release --locked:
#                                   target/release/greyspf, linked dynamically
#   make build STATIC=yes           a static binary, packaging/build-static.sh:
#                                   target/<host triple>/release/greyspf
#   make static                     the same as "make build STATIC=yes"
#   make install                    as root; installs the built binary
#   make install STATIC=yes         ... the static one
#   make install PREFIX=/usr DESTDIR=/tmp/stage
#   make uninstall                  keeps the files under $(SYSCONFDIR)/greyspf
#   make deb                        Debian package of the static binary, see
#                                   packaging/build-deb.sh (run "make static" first)
#
# Static or not: Postfix starts one greyspf per smtpd process, and a static
# binary maps no shared library, which takes about 1.6 MB off each instance's
# resident memory and about 0.5 ms off its start-up (README, "Performance").
# The Debian package ships it. The build script checks that the static binary
# calls no NSS function (getpwnam, getaddrinfo...), which a static glibc
# program cannot do safely. The host triple comes from "rustc -vV".
#
# "install" never builds: run "make build" first (as a normal user).
# It installs the same files as the Debian package: the binary, both man
# pages, the configuration and whitelists (an existing file is kept, never
# overwritten), the README, the changelog, the Postfix snippets and the
# copyright notice. With SYSCONFDIR other than /etc, the installed
# configuration and the master.cf snippet point to the files there.
#
# Unlike the package, it creates neither the system user nor the state
# directory; do that once, as root:
#
#   useradd --system --user-group --home-dir /var/lib/greyspf \
#       --no-create-home --shell /usr/sbin/nologin greyspf
#   install -d -o greyspf -g greyspf -m 0700 /var/lib/greyspf
#
# then add packaging/master.cf and packaging/main.cf to Postfix.

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/sbin
DATAROOTDIR ?= $(PREFIX)/share
MANDIR     ?= $(DATAROOTDIR)/man
DOCDIR     ?= $(DATAROOTDIR)/doc/greyspf
SYSCONFDIR ?= /etc
CONFDIR    ?= $(SYSCONFDIR)/greyspf
DESTDIR    ?=

CARGO      ?= cargo
RUSTC      ?= rustc
INSTALL    ?= install
# yes: build and install the static binary (packaging/build-static.sh).
STATIC     ?= no
# This machine's target triple, where cargo puts a build for a named target;
# asked of rustc only when a rule needs it.
HOST_TRIPLE = $(shell $(RUSTC) -vV | sed -n 's/^host: //p')
STATIC_BINARY = target/$(HOST_TRIPLE)/release/greyspf
# The built binary that "install" copies.
ifeq ($(STATIC),yes)
BINARY     ?= $(STATIC_BINARY)
else
BINARY     ?= target/release/greyspf
endif

CONFFILES  = greyspf.conf whitelist_clients whitelist_recipients
SNIPPETS   = master.cf main.cf

.PHONY: all build static install uninstall deb check-binary

all: build

ifeq ($(STATIC),yes)
build: static
else
build:
	$(CARGO) build --release --locked
endif

static:
	CARGO='$(CARGO)' packaging/build-static.sh

check-binary:
	@test -x '$(BINARY)' || { \
	    echo "greyspf: $(BINARY) not found; run 'make build$(if $(filter yes,$(STATIC)), STATIC=yes)' first" >&2; \
	    exit 1; }

install: check-binary
	$(INSTALL) -d '$(DESTDIR)$(BINDIR)' '$(DESTDIR)$(MANDIR)/man8' \
	    '$(DESTDIR)$(MANDIR)/man5' '$(DESTDIR)$(CONFDIR)' \
	    '$(DESTDIR)$(DOCDIR)/examples'
	$(INSTALL) -m 0755 '$(BINARY)' '$(DESTDIR)$(BINDIR)/greyspf'
	$(INSTALL) -m 0644 man/greyspf.8 '$(DESTDIR)$(MANDIR)/man8/greyspf.8'
	$(INSTALL) -m 0644 man/greyspf.conf.5 '$(DESTDIR)$(MANDIR)/man5/greyspf.conf.5'
	@set -e; for f in $(CONFFILES); do \
	    dst='$(DESTDIR)$(CONFDIR)'/$$f; \
	    if [ -e "$$dst" ]; then \
	        echo "keeping existing $$dst"; \
	    else \
	        if [ '$(CONFDIR)' = /etc/greyspf ]; then \
	            cp "packaging/$$f" "$$dst.tmp"; \
	        else \
	            sed -e 's|^#\(whitelist_[a-z]* = /etc/greyspf/\)|\1|' \
	                -e 's|/etc/greyspf/|$(CONFDIR)/|g' \
	                "packaging/$$f" > "$$dst.tmp"; \
	        fi; \
	        chmod 0644 "$$dst.tmp"; mv "$$dst.tmp" "$$dst"; \
	        echo "installed $$dst"; \
	    fi; \
	done
	@set -e; for f in README.md CHANGELOG.md; do \
	    if [ -f "$$f" ]; then $(INSTALL) -m 0644 "$$f" '$(DESTDIR)$(DOCDIR)/'; fi; \
	done
	$(INSTALL) -m 0644 packaging/debian/copyright '$(DESTDIR)$(DOCDIR)/copyright'
	sed -e 's|/usr/sbin/greyspf|$(BINDIR)/greyspf|' \
	    $(if $(filter /etc/greyspf,$(CONFDIR)),,-e 's|argv=.*|& -c $(CONFDIR)/greyspf.conf|') \
	    packaging/master.cf > '$(DESTDIR)$(DOCDIR)/examples/master.cf'
	$(INSTALL) -m 0644 packaging/main.cf '$(DESTDIR)$(DOCDIR)/examples/main.cf'
	@if [ -f examples/requests.txt ]; then \
	    $(INSTALL) -m 0644 examples/requests.txt '$(DESTDIR)$(DOCDIR)/examples/requests.txt'; \
	fi
	chmod 0644 '$(DESTDIR)$(DOCDIR)/examples/master.cf'

uninstall:
	rm -f '$(DESTDIR)$(BINDIR)/greyspf' \
	    '$(DESTDIR)$(MANDIR)/man8/greyspf.8' \
	    '$(DESTDIR)$(MANDIR)/man5/greyspf.conf.5'
	rm -rf '$(DESTDIR)$(DOCDIR)'
	@echo "kept $(DESTDIR)$(CONFDIR) and the state directory; remove them by hand if unwanted"

# The package ships the static binary, whatever STATIC says.
deb:
	@test -x '$(STATIC_BINARY)' || { \
	    echo "greyspf: $(STATIC_BINARY) not found; run 'make static' first" >&2; exit 1; }
	packaging/build-deb.sh '$(STATIC_BINARY)'
