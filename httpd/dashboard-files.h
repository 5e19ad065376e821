/* The dashboard's static files, embedded at build time by httpd/dashboard/embed.py. */
#pragma once

#include <stddef.h>

typedef struct DashboardFile {
        const char *name;         /* the file name: served at /dashboard/NAME (index.html also at /) */
        const char *content_type; /* the Content-Type it is served with */
        const unsigned char *data;
        size_t size;
} DashboardFile;

/* Ends with an entry whose name is NULL. */
extern const DashboardFile dashboard_files[];
