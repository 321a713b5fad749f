#include "fan.h"
static void *resp(void*a){ int g=(long)a; char buf[8192]; for(;;){ ssize_t n=read(g,buf,sizeof buf); if(n<=0) return 0;
  for(struct fanotify_event_metadata*m=(void*)buf;FAN_EVENT_OK(m,n);m=FAN_EVENT_NEXT(m,n)){ int ok=m->pid==getpid(); fprintf(stderr,"      EVENT group=%d mask=%#llx pid=%d -> %s\n",g,(unsigned long long)m->mask,m->pid,ok?"allow":"deny"); struct fanotify_response r={m->fd,ok?FAN_ALLOW:FAN_DENY}; write(g,&r,sizeof r); close(m->fd);} } }
#define R(x) do{ errno=0; long _r=(long)(x); fprintf(stderr,"    %-40s -> %ld %s\n",#x,_r,_r<0?strerror(errno):""); }while(0)
int main(int c,char**v){ const char*f=v[1]; char b[16]; pthread_t t;
  int ga=fanotify_init(FAN_CLASS_CONTENT|FAN_CLOEXEC,O_RDONLY); pthread_create(&t,0,resp,(void*)(long)ga);
  if(fanotify_mark(ga,FAN_MARK_ADD|FAN_MARK_FILESYSTEM,FAN_ACCESS_PERM,AT_FDCWD,f)) perror("arm");
  if(fanotify_mark(ga,FAN_MARK_ADD|FAN_MARK_FILESYSTEM|FAN_MARK_IGNORE_SURV_,FAN_ACCESS_PERM,AT_FDCWD,f)) perror("arm ign");
  int e1=open(f,O_RDWR);
  int g=fanotify_init(FAN_CLASS_CONTENT|FAN_CLOEXEC|FAN_UNLIMITED_QUEUE,O_RDONLY); pthread_create(&t,0,resp,(void*)(long)g);
  if(fanotify_mark(g,FAN_MARK_ADD,FAN_ACCESS_PERM,AT_FDCWD,f)) perror("mark f");
  pid_t k=fork(); if(!k){ R(pread(e1,b,4,0)); _exit(0);} waitpid(k,0,0); return 0;}
