#include "fan.h"
int main(){ int d=open("/tmp/i13/mnt",O_PATH|O_DIRECTORY); char name[64]; memset(name,'d',40); name[40]=0; int depth=0;
  mkdirat(d,"deep",0755); int cur=openat(d,"deep",O_PATH|O_DIRECTORY);
  for(depth=0;depth<150;depth++){ mkdirat(cur,name,0755); int n=openat(cur,name,O_PATH|O_DIRECTORY); if(n<0){perror("openat");return 1;} close(cur); cur=n; }
  int f=openat(cur,"secret",O_CREAT|O_WRONLY,0644); write(f,"SECRET",6); close(f);
  char lp[64],buf[8192]; sprintf(lp,"/proc/self/fd/%d",cur); ssize_t k=readlink(lp,buf,sizeof buf);
  printf("depth %d, path length ~%d: readlink(/proc/self/fd/N) of the deep dir -> %zd %s\n",depth,depth*41+20,k,k<0?strerror(errno):"ok");
  char cwd[8192]; fchdir(open(lp,O_RDONLY|O_DIRECTORY)); printf("getcwd -> %s\n", getcwd(cwd,sizeof cwd)?"ok":strerror(errno));
  int g=fanotify_init(FAN_CLASS_CONTENT|FAN_CLOEXEC,O_RDONLY);
  int r=fanotify_mark(g,FAN_MARK_ADD,FAN_OPEN_PERM|FAN_EVENT_ON_CHILD,AT_FDCWD,lp); printf("fanotify_mark via /proc/self/fd/N of the deep dir: %s\n",r?strerror(errno):"ok");
  r=fanotify_mark(g,FAN_MARK_ADD,FAN_OPEN_PERM|FAN_EVENT_ON_CHILD,cur,NULL); printf("fanotify_mark(dirfd, NULL) of the deep dir: %s\n",r?strerror(errno):"ok");
  struct { struct file_handle h; char b[128]; } fh; fh.h.handle_bytes=128; int mid; r=name_to_handle_at(cur,"",&fh.h,&mid,AT_EMPTY_PATH); printf("name_to_handle_at(deep dir): %s\n",r?strerror(errno):"ok");
  pid_t c=fork(); if(!c){ int x=openat(cur,"secret",O_RDONLY); _exit(x<0); }
  char eb[4096]; ssize_t n=read(g,eb,sizeof eb); struct fanotify_event_metadata*m=(void*)eb; sprintf(lp,"/proc/self/fd/%d",m->fd); k=readlink(lp,buf,sizeof buf);
  printf("event for the deep file: readlink(event fd) -> %zd %s\n",k,k<0?strerror(errno):"ok");
  struct fanotify_response rr={m->fd,FAN_ALLOW}; write(g,&rr,sizeof rr); waitpid(c,0,0); return 0; }
