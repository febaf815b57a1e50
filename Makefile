# PGXS build of the ivfpq extension: `make`, `make install`, `make installcheck`.
#
# The core (src/core, no Postgres headers) and the Postgres glue (src/*.cpp) are
# linked into one shared library together with Debian's static libfaiss.a.  The
# core is also built on its own by CMakeLists.txt for the unit tests.

EXTENSION  = ivfpq
EXTVERSION = 0.5

MODULE_big = ivfpq

# PGXS reads its variables from the environment too, and a shell that happens
# to export DATA, DOCS or SCRIPTS would make `make install` try to install
# files that do not exist.  Every PGXS variable this build does not use is set
# empty here, and the ones it uses are set (not appended to) below.
MODULES        =
PROGRAM        =
MODULEDIR      =
DATA_TSEARCH   =
DOCS           =
SCRIPTS        =
SCRIPTS_built  =
HEADERS        =
HEADERS_built  =
ISOLATION      =
ISOLATION_OPTS =
TAP_TESTS      =
NO_INSTALL     =
NO_INSTALLCHECK =
EXTRA_CLEAN    =
EXTRA_INSTALL  =
PG_CFLAGS      =
PG_LDFLAGS     =
PG_LIBS        =
PG_LIBS_INTERNAL =
GLUE_SRCS  = $(sort $(wildcard src/*.cpp))
CORE_SRCS  = $(sort $(wildcard src/core/*.cpp))
OBJS       = $(GLUE_SRCS:.cpp=.o) $(CORE_SRCS:.cpp=.o)

# The install script is assembled from ordered parts so that each area of the
# SQL surface (type, operators, access method, functions) lives in its own file.
SQL_PARTS  = $(sort $(wildcard sql/install/*.sql))

# The SQL surface is a contract: each version ships an upgrade script from the
# one before, sql/upgrade/ivfpq--A--B.sql.in, whose "--@include FILE" lines
# pull in the install parts that define new objects.  Each released install
# script is kept as released (sql/upgrade/ivfpq--0.1.sql, 0.2, 0.3, 0.4), so
# the upgrade test can create any of them and update it through every step to
# the current version.
UPGRADE_SRCS  = $(sort $(wildcard sql/upgrade/$(EXTENSION)--*--*.sql.in))
UPGRADE_BUILT = $(patsubst sql/upgrade/%.sql.in,sql/%.sql,$(UPGRADE_SRCS))
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql $(UPGRADE_BUILT)
DATA       = sql/upgrade/$(EXTENSION)--0.1.sql sql/upgrade/$(EXTENSION)--0.2.sql sql/upgrade/$(EXTENSION)--0.3.sql sql/upgrade/$(EXTENSION)--0.4.sql

# pg_regress: every sql/<name>.sql except the generated install script.
REGRESS      = $(sort $(patsubst sql/%.sql,%,$(filter-out sql/$(EXTENSION)--%,$(wildcard sql/*.sql))))
REGRESS_OPTS = --inputdir=. --load-extension=$(EXTENSION)

WERROR ?= -Werror
PG_CPPFLAGS  = -I$(srcdir)/src -I$(srcdir)/src/core
PG_CXXFLAGS  = -std=c++17 -fopenmp -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
               -Wno-cast-function-type -Wno-register $(WERROR)
# Static FAISS plus what it needs; keep FAISS/C++ symbols out of the dynamic table.
SHLIB_LINK  = -Wl,--exclude-libs,ALL /usr/lib/x86_64-linux-gnu/libfaiss.a \
               -lopenblas -llapack -fopenmp -lgomp -lstdc++ -lm

# Debian's PG15 is built with LLVM JIT; we do not ship bitcode (no clang needed).
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_PARTS)
	cat $(SQL_PARTS) > $@

sql/$(EXTENSION)--%.sql: sql/upgrade/$(EXTENSION)--%.sql.in $(SQL_PARTS)
	awk '/^--@include / { while ((getline line < $$2) > 0) print line; close($$2); next } { print }' $< > $@

# Every object depends on the core API headers.
$(OBJS): $(wildcard src/*.h) $(wildcard src/core/*.h)

# The core is internal to the library: hide its symbols (and the FAISS inline
# code it instantiates) from the dynamic symbol table.
$(CORE_SRCS:.cpp=.o): override CXXFLAGS += -fvisibility=hidden -fvisibility-inlines-hidden
