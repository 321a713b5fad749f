#include "fan.h"
/* bpc MODE FILE N : MODE none|arm|inode(allowing responder)|armsame */
static int g; static void *resp(void*a){ char buf[65536]; for(;;){ ssize_t n=read(g,buf,sizeof buf); if(n<=0) return 0;
  for(struct fanotify_event_metadata*m=(void*)buf;FAN_EVENT_OK(m,n);m=FAN_EVENT_NEXT(m,n)){ struct fanotify_response r={m->fd,FAN_ALLOW}; write(g,&r,sizeof r); close(m->fd);} } }
int main(int c,char**v){ const char*mode=v[1],*f=v[2]; long N=atol(v[3]); size_t bs=c>4?atol(v[4]):4096;
  int ga=-1;
  if(!strcmp(mode,"arm")||!strcmp(mode,"arm+inode")){ ga=fanotify_init(FAN_CLASS_PRE_CONTENT|FAN_CLOEXEC,O_RDONLY);
    if(fanotify_mark(ga,FAN_MARK_ADD|FAN_MARK_FILESYSTEM,FAN_PRE_ACCESS,AT_FDCWD,f)||fanotify_mark(ga,FAN_MARK_ADD|FAN_MARK_FILESYSTEM|FAN_MARK_IGNORE_SURV_,FAN_PRE_ACCESS,AT_FDCWD,f)){perror("arm");return 1;}}
  if(strstr(mode,"inode")){ g=fanotify_init(FAN_CLASS_PRE_CONTENT|FAN_CLOEXEC|FAN_UNLIMITED_QUEUE,O_RDONLY); if(fanotify_mark(g,FAN_MARK_ADD,FAN_PRE_ACCESS,AT_FDCWD,f)){perror("m");return 1;} pthread_t t; pthread_create(&t,0,resp,0);}
  if(!strcmp(mode,"openperm")){ g=fanotify_init(FAN_CLASS_CONTENT|FAN_CLOEXEC|FAN_UNLIMITED_QUEUE,O_RDONLY); if(fanotify_mark(g,FAN_MARK_ADD,FAN_OPEN_PERM,AT_FDCWD,f)){perror("m");return 1;} pthread_t t; pthread_create(&t,0,resp,0);}
  char *b=aligned_alloc(4096,1<<20);
  if(!strcmp(v[5?5:5]?"":"","")){}
  int fd=open(f,O_RDONLY); if(fd<0){perror("open");return 1;}
  if(getenv("SEQ")){ /* sequential cold read of whole file */
    posix_fadvise(fd,0,0,POSIX_FADV_DONTNEED); double t0=now(); long tot=0; ssize_t n; while((n=read(fd,b,bs))>0) tot+=n; double t=now()-t0;
    printf("%-10s seq cold read %ld MB bs=%zu: %.3f s, %.0f MB/s\n",mode,tot>>20,bs,t,tot/1048576.0/t); return 0;}
  if(getenv("OPEN")){ double t0=now(); for(long i=0;i<N;i++){ int x=open(f,O_RDONLY); close(x);} double t=now()-t0; printf("%-10s open+close: %.2f us\n",mode,t/N*1e6); return 0;}
  double t0=now(); for(long i=0;i<N;i++) pread(fd,b,bs,0); double t=now()-t0;
  printf("%-10s pread %zuB: %.3f us/call\n",mode,bs,t/N*1e6); return 0;}
