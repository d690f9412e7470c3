/* tools/backup_offline.h — reading a backup directory without a server (backup_offline.c). Both
 * print what they did or every problem (up to 20) and return mbytectl's exit status: 0 success,
 * 1 a damaged or missing backup or an occupied target, 2 a bad snapshot name. `snapshot` NULL
 * means the newest (DIR/latest). */
#ifndef MBYTE_BACKUP_OFFLINE_H
#define MBYTE_BACKUP_OFFLINE_H
int backup_verify(const char *dir, const char *snapshot);
int backup_restore(const char *dir, const char *snapshot, const char *data);
#endif
