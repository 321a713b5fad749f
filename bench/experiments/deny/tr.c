#include "fan.h"
int main(int c,char**v){ const char*f=v[1]; int g=fanotify_init(FAN_CLASS_PRE_CONTENT|FAN_CLOEXEC,O_RDONLY); 
 if(fanotify_mark(g,FAN_MARK_ADD,FAN_PRE_ACCESS|(c>2?FAN_OPEN_PERM:0),AT_FDCWD,f)) {perror("mark");return 1;}
 pid_t k=fork(); if(!k){ int fd=open(f,O_RDWR|(c>2?0:0)); 
   errno=0; int r=truncate(f,0); fprintf(stderr,"truncate(path,0)=%d %s\n",r,strerror(errno));
   struct stat st; stat(f,&st); fprintf(stderr,"size %ld\n",st.st_size);
   errno=0; r=ftruncate(fd,0); fprintf(stderr,"ftruncate(fd,0)=%d %s\n",r,strerror(errno));
   errno=0; r=truncate(f,5); fprintf(stderr,"truncate(path,5)=%d %s\n",r,strerror(errno));
   errno=0; r=open(f,O_WRONLY|O_TRUNC); fprintf(stderr,"open O_TRUNC=%d %s\n",r,strerror(errno)); stat(f,&st); fprintf(stderr,"size %ld\n",st.st_size);
   _exit(0);}
 char buf[4096]; int status;
 for(;;){ struct pollfd{int fd;short e,r;}; 
   int n=read(g,buf,sizeof buf); if(n<=0) break; for(struct fanotify_event_metadata*m=(void*)buf;FAN_EVENT_OK(m,n);m=FAN_EVENT_NEXT(m,n)){ struct range_info*ri=(void*)((char*)m+m->metadata_len);
   fprintf(stderr,"  event mask=%#llx range off=%llu count=%llu -> deny\n",(unsigned long long)m->mask,m->event_len>m->metadata_len?(unsigned long long)ri->off:0ULL,m->event_len>m->metadata_len?(unsigned long long)ri->count:0ULL);
   struct fanotify_response r={m->fd,FAN_DENY}; write(g,&r,sizeof r); close(m->fd);} 
   if(waitpid(k,&status,WNOHANG)==k) break; }
 return 0;}
