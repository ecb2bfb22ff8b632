/*
 * schema.h: the index's schema and its migrations, the same for every SQL
 * engine (the table list is in schema.c's header comment).
 */
#ifndef CK_SCHEMA_H
#define CK_SCHEMA_H

#include "sql.h"

/* The schema version this build writes. */
int schema_latest(void);

/* Brings the database behind c to the latest schema in one migration
 * transaction (one process at a time). where names it in messages.
 * CK_ECORRUPT when the database is newer than this build. */
int schema_migrate(const struct sql_driver *drv, struct sql_conn *c, const char *where);

#endif
