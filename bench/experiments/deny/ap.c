#include "fan.h"
static int g; static void *resp(void*a){ char buf[8192]; for(;;){ ssize_t n=read(g,buf,sizeof buf); if(n<=0) return 0;
  for(struct fanotify_event_metadata*m=(void*)buf;FAN_EVENT_OK(m,n);m=FAN_EVENT_NEXT(m,n)){ int ok=m->pid==getpid(); fprintf(stderr,"      EVENT mask=%#llx pid=%d -> %s\n",(unsigned long long)m->mask,m->pid,ok?"allow":"deny"); struct fanotify_response r={m->fd,ok?FAN_ALLOW:FAN_DENY}; write(g,&r,sizeof r); close(m->fd);} } }
#define R(x) do{ errno=0; long _r=(long)(x); fprintf(stderr,"    %-40s -> %ld %s\n",#x,_r,_r<0?strerror(errno):""); }while(0)
int main(int c,char**v){ const char*f=v[1],*other=v[2]; char b[16];
  int e0=open(f,O_RDWR);
  g=fanotify_init(FAN_CLASS_CONTENT|FAN_CLOEXEC|FAN_UNLIMITED_QUEUE,O_RDONLY); pthread_t t; pthread_create(&t,0,resp,0);
  if(fanotify_mark(g,FAN_MARK_ADD,FAN_ACCESS_PERM,AT_FDCWD,other)) perror("mark other");
  int e1=open(f,O_RDWR); /* after a perm mark on another inode of the sb */
  if(fanotify_mark(g,FAN_MARK_ADD,FAN_ACCESS_PERM|FAN_OPEN_PERM,AT_FDCWD,f)) perror("mark f");
  int e2=open(f,O_RDWR);
  pid_t k=fork(); if(!k){ R(pread(e0,b,4,0)); R(pread(e1,b,4,0)); R(pread(e2,b,4,0)); R(pwrite(e2,"q",1,0)); R(mmap(0,4096,PROT_READ,MAP_SHARED,e2,0)); R(ftruncate(e2,1)); R(truncate(f,1)); _exit(0);} waitpid(k,0,0); return 0;}
