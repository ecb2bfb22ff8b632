/*
 * web_assets.h: the dashboard's files, compiled in by tools/embed.sh.
 */
#ifndef CK_WEB_ASSETS_H
#define CK_WEB_ASSETS_H

struct web_asset {
	const char *path; /* "/app.js" */
	const char *type; /* Content-Type */
	const unsigned char *data;
	unsigned long len;
};

/* Terminated by an entry whose path is NULL. */
extern const struct web_asset web_assets[];

#endif
