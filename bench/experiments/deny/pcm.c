#include "fan.h"
int main(int c,char**v){ int g=fanotify_init(FAN_CLASS_PRE_CONTENT|FAN_CLOEXEC,O_RDONLY);
 for(int i=1;i<c;i++){ int r=fanotify_mark(g,FAN_MARK_ADD,FAN_OPEN_PERM|FAN_OPEN_EXEC_PERM|FAN_ACCESS_PERM,AT_FDCWD,v[i]); printf("  pre-content group, inode mark OPEN_PERM|OPEN_EXEC_PERM|ACCESS_PERM on %-22s: %s\n",v[i],r?strerror(errno):"ok");
  r=fanotify_mark(g,FAN_MARK_ADD|FAN_MARK_FILESYSTEM,FAN_ACCESS_PERM,AT_FDCWD,v[i]); int r2=fanotify_mark(g,FAN_MARK_ADD|FAN_MARK_FILESYSTEM|FAN_MARK_IGNORE_SURV_,FAN_ACCESS_PERM,AT_FDCWD,v[i]);
  printf("  pre-content group, sb arming mark ACCESS_PERM + ignore on %-22s: %s / %s\n",v[i],r?strerror(errno):"ok",r2?strerror(errno):"ok");
  fanotify_mark(g,FAN_MARK_REMOVE|FAN_MARK_FILESYSTEM,FAN_ACCESS_PERM,AT_FDCWD,v[i]); }
 return 0;}
