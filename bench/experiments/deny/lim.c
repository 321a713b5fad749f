#include "fan.h"
int main(){ int g=fanotify_init(FAN_CLASS_NOTIF|FAN_REPORT_FID|FAN_UNLIMITED_MARKS,0); printf("init with UNLIMITED_MARKS in userns: %s\n",g<0?strerror(errno):"ok");
 g=fanotify_init(FAN_CLASS_NOTIF|FAN_REPORT_FID,0); if(g<0){perror("init");return 1;}
 char p[100]; for(int i=1;i<=20;i++){ sprintf(p,"/tmp/i13/lim/f%d",i); if(fanotify_mark(g,FAN_MARK_ADD,FAN_MODIFY,AT_FDCWD,p)){ printf("mark %d failed: %s (errno %d)\n",i,strerror(errno),errno); return 0;} } printf("20 marks ok\n"); return 0;}
