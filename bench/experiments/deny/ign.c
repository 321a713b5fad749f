#include "fan.h"
int main(){ int g=fanotify_init(FAN_CLASS_PRE_CONTENT|FAN_CLOEXEC,O_RDONLY);
 int r=fanotify_mark(g,FAN_MARK_ADD|FAN_MARK_FILESYSTEM,FAN_PRE_ACCESS,AT_FDCWD,"/tmp/i13/mnt"); printf("sb mark: %s\n",r?strerror(errno):"ok");
 r=fanotify_mark(g,FAN_MARK_ADD|FAN_MARK_FILESYSTEM|FAN_MARK_IGNORE,FAN_PRE_ACCESS,AT_FDCWD,"/tmp/i13/mnt"); printf("sb FAN_MARK_IGNORE without SURV: %s (errno %d)\n",r?strerror(errno):"ok",r?errno:0);
 r=fanotify_mark(g,FAN_MARK_ADD|FAN_MARK_FILESYSTEM|0x20 /*FAN_MARK_IGNORED_MASK*/,FAN_PRE_ACCESS,AT_FDCWD,"/tmp/i13/mnt"); printf("sb old FAN_MARK_IGNORED_MASK without SURV: %s\n",r?strerror(errno):"ok");
 return 0;}
