/* tools/backup_offline.h — reading a backup directory without a server (backup_offline.c). Both
 * print what they did or every problem (up to 20) and return mbytectl's exit status: 0 success,
 * 1 a damaged or missing backup or an occupied target, 2 a bad snapshot name. `snapshot` NULL
 * means the newest (DIR/latest). */
#ifndef MBYTE_BACKUP_OFFLINE_H
#define MBYTE_BACKUP_OFFLINE_H
int backup_verify(const char *dir, const char *snapshot);
int backup_restore(const char *dir, const char *snapshot, const char *data);
/* `backup prune DIR [--keep-last N]`: removes every snapshot but the newest keep_last (0: keeps
 * them all), then every chunk file that no remaining snapshot lists, and what failed backups
 * left. Takes DIR's lock (a backup into DIR waits its turn); refuses if a remaining snapshot's
 * chunk list cannot be read. */
int backup_prune(const char *dir, int keep_last);
#endif
