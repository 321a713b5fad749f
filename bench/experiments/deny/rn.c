#include "fan.h"
#include <sys/inotify.h>
/* rename-into-place race: daemon marks from inotify IN_MOVED_TO (async); arming on */
static int g; static volatile pid_t writer;
static void *resp(void*a){ char buf[8192]; for(;;){ ssize_t n=read(g,buf,sizeof buf); if(n<=0) return 0;
  for(struct fanotify_event_metadata*m=(void*)buf;FAN_EVENT_OK(m,n);m=FAN_EVENT_NEXT(m,n)){ struct fanotify_response r={m->fd,(m->pid==writer||m->pid==getpid())?FAN_ALLOW:FAN_DENY}; write(g,&r,sizeof r); close(m->fd);} } }
static void *tree(void*a){ int in=inotify_init1(0); inotify_add_watch(in,"/tmp/i13/mnt/prot",IN_MOVED_TO|IN_CREATE); char buf[4096];
  for(;;){ ssize_t n=read(in,buf,sizeof buf); for(char*p=buf;p<buf+n;){ struct inotify_event*e=(void*)p; char s[300]; sprintf(s,"/tmp/i13/mnt/prot/%s",e->name);
      int fd=open(s,O_PATH|O_NOFOLLOW); if(fd>=0){ char pp[64]; sprintf(pp,"/proc/self/fd/%d",fd); fanotify_mark(g,FAN_MARK_ADD,FAN_OPEN_PERM|FAN_PRE_ACCESS,AT_FDCWD,pp); close(fd);} p+=sizeof *e+e->len;} } }
int main(int c,char**v){ int N=atoi(v[1]);
  system("rm -rf /tmp/i13/mnt/prot /tmp/i13/mnt/steal /tmp/i13/mnt/stage; mkdir -p /tmp/i13/mnt/prot /tmp/i13/mnt/steal /tmp/i13/mnt/stage");
  g=fanotify_init(FAN_CLASS_PRE_CONTENT|FAN_CLOEXEC|FAN_UNLIMITED_QUEUE,O_RDONLY);
  fanotify_mark(g,FAN_MARK_ADD,FAN_OPEN_PERM|FAN_EVENT_ON_CHILD,AT_FDCWD,"/tmp/i13/mnt/prot");
  int ga=fanotify_init(FAN_CLASS_PRE_CONTENT|FAN_CLOEXEC,O_RDONLY); fanotify_mark(ga,FAN_MARK_ADD|FAN_MARK_FILESYSTEM,FAN_PRE_ACCESS,AT_FDCWD,"/tmp/i13/mnt"); fanotify_mark(ga,FAN_MARK_ADD|FAN_MARK_FILESYSTEM|FAN_MARK_IGNORE_SURV_,FAN_PRE_ACCESS,AT_FDCWD,"/tmp/i13/mnt");
  pthread_t t; pthread_create(&t,0,resp,0); pthread_create(&t,0,tree,0);
  int ready[2],a2w[2]; pipe(ready); pipe(a2w);
  pid_t A=fork(); if(!A){ int in=inotify_init1(0); inotify_add_watch(in,"/tmp/i13/mnt/prot",IN_MOVED_TO); write(ready[1],"r",1); int leaks=0,od=0,rd=0; char buf[4096];
    for(int i=0;i<N;i++){ read(in,buf,sizeof buf); struct inotify_event*e=(void*)buf; char s[300],d[300]; sprintf(s,"/tmp/i13/mnt/prot/%s",e->name); sprintf(d,"/tmp/i13/mnt/steal/%s",e->name);
      link(s,d); int fd=open(d,O_RDONLY); if(fd<0) od++; else { char rb[8]; ssize_t k=pread(fd,rb,6,0); if(k==6) leaks++; else rd++; close(fd);} write(a2w[1],"a",1);} 
    printf("rename-into-place, arming on, daemon marks from inotify: N=%d leaks=%d open_denied=%d read_denied=%d\n",N,leaks,od,rd); fflush(stdout); _exit(0);}
  char x; read(ready[0],&x,1);
  pid_t W=fork(); if(!W){ for(int i=0;i<N;i++){ char s[300],d[300]; sprintf(s,"/tmp/i13/mnt/stage/s%d",i); sprintf(d,"/tmp/i13/mnt/prot/s%d",i); int fd=open(s,O_CREAT|O_WRONLY,0644); write(fd,"SECRET",6); close(fd); rename(s,d); read(a2w[0],&x,1);} _exit(0);}
  writer=W; waitpid(W,0,0); waitpid(A,0,0); return 0;}
