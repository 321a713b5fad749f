#include "fan.h"
#include <sys/inotify.h>
/* race VARIANT(after|before) ARM(0|1) DELAY_US N */
static int g; static volatile pid_t writer; static int before, delay; static uint64_t pmask;
static ino_t known[10000]; static int nknown;
static void *resp(void*a){ char buf[8192]; for(;;){ ssize_t n=read(g,buf,sizeof buf); if(n<=0) return 0;
  for(struct fanotify_event_metadata*m=(void*)buf;FAN_EVENT_OK(m,n);m=FAN_EVENT_NEXT(m,n)){
    struct stat st; fstat(m->fd,&st); int isnew=1; for(int i=0;i<nknown;i++) if(known[i]==st.st_ino) isnew=0;
    int ok = m->pid==writer||m->pid==getpid();
    struct fanotify_response r={m->fd,ok?FAN_ALLOW:FAN_DENY};
    char p[64]; sprintf(p,"/proc/self/fd/%d",m->fd);
    if(isnew && (m->mask&FAN_OPEN_PERM)){ if(delay) usleep(delay);
      if(before){ fanotify_mark(g,FAN_MARK_ADD,pmask,AT_FDCWD,p); known[nknown++]=st.st_ino; write(g,&r,sizeof r);} 
      else { write(g,&r,sizeof r); if(getenv("POST")) usleep(atoi(getenv("POST"))); fanotify_mark(g,FAN_MARK_ADD,pmask,AT_FDCWD,p); known[nknown++]=st.st_ino; } }
    else write(g,&r,sizeof r);
    close(m->fd);} } }
int main(int c,char**v){ before=!strcmp(v[1],"before"); int arm=atoi(v[2]); delay=atoi(v[3]); int N=atoi(v[4]); int pre=c>5?atoi(v[5]):1;
  system("rm -rf /tmp/i13/mnt/prot /tmp/i13/mnt/steal; mkdir -p /tmp/i13/mnt/prot /tmp/i13/mnt/steal");
  pmask = FAN_OPEN_PERM | (pre?FAN_PRE_ACCESS:0);
  g=fanotify_init((pre?FAN_CLASS_PRE_CONTENT:FAN_CLASS_CONTENT)|FAN_CLOEXEC|FAN_UNLIMITED_QUEUE,O_RDONLY);
  if(fanotify_mark(g,FAN_MARK_ADD,FAN_OPEN_PERM|FAN_EVENT_ON_CHILD|(pre&&!getenv("NODIRPRE")?FAN_PRE_ACCESS:0),AT_FDCWD,"/tmp/i13/mnt/prot")){perror("dir mark");return 1;}
  if(arm){ int ga=fanotify_init(FAN_CLASS_PRE_CONTENT|FAN_CLOEXEC,O_RDONLY);
    if(fanotify_mark(ga,FAN_MARK_ADD|FAN_MARK_FILESYSTEM,FAN_PRE_ACCESS,AT_FDCWD,"/tmp/i13/mnt")||fanotify_mark(ga,FAN_MARK_ADD|FAN_MARK_FILESYSTEM|FAN_MARK_IGNORE_SURV_,FAN_PRE_ACCESS,AT_FDCWD,"/tmp/i13/mnt")){perror("arm");return 1;}}
  int w2a[2],a2w[2],ready[2]; pipe(w2a); pipe(a2w); pipe(ready);
  pid_t A=fork(); if(!A){ /* attacker */
    int in=inotify_init1(0); inotify_add_watch(in,"/tmp/i13/mnt/prot",IN_CREATE); write(ready[1],"r",1);
    int leaks=0,oblk=0,rden=0,lfail=0; char buf[4096]; 
    for(int i=0;i<N;i++){ ssize_t n=read(in,buf,sizeof buf); struct inotify_event*e=(void*)buf; char src[300],dst[300];
      sprintf(src,"/tmp/i13/mnt/prot/%s",e->name); sprintf(dst,"/tmp/i13/mnt/steal/%s",e->name);
      int fd=-1; if(link(src,dst)) lfail++; else { fd=open(dst,O_RDONLY); if(fd<0) oblk++; }
      char x; read(w2a[0],&x,1); /* content written */
      if(fd>=0){ char rb[16]={0}; ssize_t k=pread(fd,rb,6,0); if(k==6&&!memcmp(rb,"SECRET",6)) leaks++; else if(k<0) rden++; close(fd);} 
      write(a2w[1],"a",1);}
    printf("variant=%s arm=%d pre=%d delay=%dus N=%d: leaks=%d open_denied=%d read_denied=%d link_failed=%d\n",v[1],arm,pre,delay,N,leaks,oblk,rden,lfail); fflush(stdout); _exit(0);}
  char x; read(ready[0],&x,1);
  pid_t W=fork(); if(!W){ char p[300]; for(int i=0;i<N;i++){ sprintf(p,"/tmp/i13/mnt/prot/s%d",i); int fd=open(p,O_CREAT|O_EXCL|O_WRONLY,0644); if(fd<0){perror("writer open");} if(!getenv("NOWAIT")) usleep(1000); write(fd,"SECRET",6); close(fd); write(w2a[1],"w",1); read(a2w[0],&x,1);} _exit(0);}
  writer=W; pthread_t t; pthread_create(&t,0,resp,0);
  waitpid(W,0,0); waitpid(A,0,0); return 0;}
