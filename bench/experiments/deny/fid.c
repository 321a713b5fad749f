#include "fan.h"
int main(int c,char**v){ int g=fanotify_init(FAN_CLASS_NOTIF|FAN_REPORT_FID|FAN_REPORT_DFID_NAME|FAN_UNLIMITED_MARKS,0); if(g<0){perror("init");return 1;}
 for(int i=1;i<c;i++){ int r=fanotify_mark(g,FAN_MARK_ADD,FAN_CREATE|FAN_MOVED_TO|FAN_DELETE|FAN_ONDIR|FAN_EVENT_ON_CHILD|FAN_DELETE_SELF|FAN_MOVE_SELF,AT_FDCWD,v[i]); printf("  FID dir mark on %-22s: %s\n",v[i],r?strerror(errno):"ok"); } return 0;}
